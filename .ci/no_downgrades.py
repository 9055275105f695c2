"""Fail if installing the wheel changed a package that was installed before it (a downgrade or an upgrade of
something the user's environment already held). Usage: no_downgrades.py pinned.txt before.txt after.txt"""
import sys


def versions(path):
    out = {}
    for line in open(path):
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.lower().replace("_", "-")] = version.strip()
    return out


pinned, before, after = (versions(p) for p in sys.argv[1:4])
changed = {name: (before.get(name), after.get(name)) for name in pinned if before.get(name) != after.get(name)}
for name, version in pinned.items():
    print(f"{name}: {version} before, {after.get(name)} after installing the wheel")
if changed:
    sys.exit(f"Installing the wheel changed packages the environment already held: {changed}")
print("no package the environment held was changed")
