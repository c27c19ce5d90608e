"""The class table editor: label scheme (plain or panoptic, divisor) and classes (add, rename,
colour). It edits a :class:`napari_sam.labels.LabelScheme`; the widget stores it in the target
layer's ``metadata["napari_sam"]``."""

from __future__ import annotations

import copy

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_sam.labels import ClassInfo, LabelScheme

PLAIN, PANOPTIC = "plain instances", "panoptic"
DEFAULT_DIVISOR = 1000


def default_scheme() -> LabelScheme:
    """The scheme of a new target layer: panoptic, divisor 1000, one class."""
    return LabelScheme(divisor=DEFAULT_DIVISOR, classes={1: "object"})


class ClassTable(QWidget):
    """Label scheme and class table editor.

    Signals
    -------
    scheme_changed(LabelScheme)
        After any edit (kind, divisor, add, rename, colour).
    class_selected(object)
        The selected class ID (int), or None for a plain scheme.
    """

    scheme_changed = Signal(object)
    class_selected = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scheme = default_scheme()
        self._selected: int | None = 1
        self._updating = False

        self.kind = QComboBox()
        self.kind.addItems([PLAIN, PANOPTIC])
        self.kind.setToolTip("Plain: IDs 1, 2, 3... Panoptic: ID = class × divisor + instance")
        self.kind.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.kind.setMinimumContentsLength(10)
        self.divisor = QSpinBox()
        self.divisor.setRange(2, 1_000_000_000)
        self.divisor.setValue(DEFAULT_DIVISOR)
        self.divisor.setToolTip("Panoptic divisor: instances per class (1000 -> class 2 object 7 = 2007)")
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["", "ID", "class"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        self.table.setMinimumHeight(110)
        self.table.setMaximumHeight(170)
        self.add_button = QPushButton("Add class")
        self.colour_button = QPushButton("Colour…")
        self.note = QLabel("")
        self.note.setWordWrap(True)

        top = QHBoxLayout()
        top.addWidget(self.kind, 1)
        top.addWidget(QLabel("divisor"))
        top.addWidget(self.divisor)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.colour_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.note)

        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.divisor.valueChanged.connect(self._kind_changed)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemChanged.connect(self._item_changed)
        self.table.cellDoubleClicked.connect(self._double_clicked)
        self.add_button.clicked.connect(self._add_clicked)
        self.colour_button.clicked.connect(self._pick_colour)
        self._refresh()

    # -- public ------------------------------------------------------------------------------
    @property
    def scheme(self) -> LabelScheme:
        return self._scheme

    def set_scheme(self, scheme: LabelScheme, locked: bool = False) -> None:
        """Show ``scheme``; ``locked`` keeps kind and divisor fixed (the layer has labels)."""
        self._scheme = copy.deepcopy(scheme)
        if scheme.is_panoptic and self._selected not in scheme.classes:
            self._selected = min(scheme.classes, default=None)
        elif not scheme.is_panoptic:
            self._selected = None
        self.kind.setEnabled(not locked)
        self.divisor.setEnabled(not locked)
        self.note.setText("Kind and divisor are fixed: the target layer has labels." if locked else "")
        self._refresh()
        self.class_selected.emit(self._selected)

    @property
    def selected_class(self) -> int | None:
        return self._selected

    @selected_class.setter
    def selected_class(self, class_id: int | None) -> None:
        if class_id is None:
            if self._scheme.is_panoptic:
                raise ValueError("a panoptic scheme needs a class: pick one of the class table")
        else:
            self._scheme.info(int(class_id))  # ValueError naming known classes
            class_id = int(class_id)
        self._selected = class_id
        self._refresh()
        self.class_selected.emit(class_id)

    def add_class(self, name: str | None = None, colour: str | None = None) -> ClassInfo:
        """Add a class (panoptic only), select it and return it."""
        if not self._scheme.is_panoptic:
            self.kind.setCurrentText(PANOPTIC)
        next_id = max(self._scheme.classes, default=0) + 1
        info = self._scheme.add_class(name or f"class {next_id}", colour)
        self._selected = info.id
        self._emit()
        self.class_selected.emit(info.id)
        return info

    def rename_class(self, class_id: int, name: str) -> None:
        self._scheme.rename_class(class_id, name)
        self._emit()

    def recolour_class(self, class_id: int, colour: str) -> None:
        self._scheme.recolour_class(class_id, colour)
        self._emit()

    # -- internals ---------------------------------------------------------------------------
    def _add_clicked(self) -> None:
        self.add_class()

    def _double_clicked(self, row: int, column: int) -> None:
        if column == 0:
            self._pick_colour()

    def _classes(self) -> list[ClassInfo]:
        table = [c for c in self._scheme.classes.values() if isinstance(c, ClassInfo)]
        return sorted(table, key=lambda c: c.id)

    def _emit(self) -> None:
        self._refresh()
        self.scheme_changed.emit(self._scheme)

    def _refresh(self) -> None:
        self._updating = True
        try:
            panoptic = self._scheme.is_panoptic
            self.kind.setCurrentText(PANOPTIC if panoptic else PLAIN)
            if panoptic:
                self.divisor.setValue(int(self._scheme.divisor or DEFAULT_DIVISOR))
            self.divisor.setVisible(panoptic)
            for w in (self.table, self.add_button, self.colour_button):
                w.setVisible(panoptic)
            classes = self._classes()
            self.table.setRowCount(len(classes))
            for row, info in enumerate(classes):
                swatch = QTableWidgetItem()
                swatch.setData(Qt.DecorationRole, QColor.fromRgbF(*info.colour))  # visible when selected
                swatch.setToolTip("Double-click to change the colour")
                swatch.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                ident = QTableWidgetItem(str(info.id))
                ident.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                ident.setData(Qt.UserRole, info.id)
                name = QTableWidgetItem(info.name)
                name.setToolTip("Double-click to rename")
                for col, item in enumerate((swatch, ident, name)):
                    self.table.setItem(row, col, item)
                if info.id == self._selected:
                    self.table.selectRow(row)
        finally:
            self._updating = False

    def _row_class(self, row: int) -> int | None:
        item = self.table.item(row, 1)
        return None if item is None else int(item.data(Qt.UserRole))

    def _kind_changed(self) -> None:
        if self._updating:
            return
        if self.kind.currentText() == PLAIN:
            self._scheme = LabelScheme(divisor=None)
            self._selected = None
        else:
            classes = dict(self._scheme.classes) or {1: "object"}
            self._scheme = LabelScheme(divisor=self.divisor.value(), classes=classes)
            if self._selected not in self._scheme.classes:
                self._selected = min(self._scheme.classes)
        self._emit()
        self.class_selected.emit(self._selected)

    def _selection_changed(self) -> None:
        if self._updating:
            return
        rows = {i.row() for i in self.table.selectedItems()}
        if rows:
            self._selected = self._row_class(rows.pop())
            self.class_selected.emit(self._selected)

    def _item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != 2:
            return
        class_id = self._row_class(item.row())
        name = item.text().strip()
        if class_id is None:
            return
        if not name:
            self._refresh()  # an empty name is not allowed: restore the old one
            return
        self.rename_class(class_id, name)

    def _pick_colour(self) -> None:
        if self._selected is None:
            return
        info = self._scheme.info(self._selected)
        colour = QColorDialog.getColor(QColor.fromRgbF(*info.colour), self, f"Colour of {info.name}")
        if colour.isValid():
            self.recolour_class(self._selected, colour.name())
