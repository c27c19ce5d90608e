"""Run every ```console block of a markdown file and paste the real output under each command.

usage: python scripts/run_doc.py DOC.md WORKDIR [--env K=V ...]
Lines starting with "$ " are commands (run with bash in WORKDIR, in order, sharing the folder);
everything else in the block is replaced by their output (stdout + stderr, as a user sees it).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

doc, work = Path(sys.argv[1]), Path(sys.argv[2])
env = dict(os.environ)
for kv in sys.argv[3:]:
    k, _, v = kv.partition("=")
    env[k] = v
work.mkdir(parents=True, exist_ok=True)
text = doc.read_text()
out_parts = []
pos = 0
for m in re.finditer(r"```console\n(.*?)```", text, flags=re.S):
    out_parts.append(text[pos:m.start()])
    block = []
    for line in m.group(1).splitlines():
        if not line.startswith("$ "):
            continue
        cmd = line[2:]
        block.append(line)
        done = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        output = done.stdout.rstrip("\n")
        output = output.replace(str(work) + "/", "").replace(str(work), ".")
        if output:
            block.append(output)
        print(f"$ {cmd}\n{output}\n[rc={done.returncode}]", file=sys.stderr)
    out_parts.append("```console\n" + "\n".join(block) + "\n```")
    pos = m.end()
out_parts.append(text[pos:])
doc.write_text("".join(out_parts))
