"""package.xml against the code: every third-party import of latent_vs/ and launch/ maps (by
the table below) to a rosdep key that package.xml declares, every declared key is one the
rosdep database resolves (test/data/rosdep_keys.yaml: a copy of its entries), and nothing is
declared that no import needs."""
import ast
import os
import sys
import xml.etree.ElementTree as ET

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = yaml.safe_load(open(os.path.join(ROOT, "test", "data", "rosdep_keys.yaml")))

# top-level import -> rosdep key
IMPORT_TO_KEY = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "diagnostic_msgs": "diagnostic_msgs",
    "ament_index_python": "ament_index_python",
    "cv_bridge": "cv_bridge",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "sklearn": "python3-sklearn",
    "threadpoolctl": "python3-sklearn",  # no key of its own; a dependency of scikit-learn (deb and pip)
    "torch": "python3-torch",
    "faiss": "python3-faiss",
    "rosbags": "python3-rosbags-pip",
    "pytest": "python3-pytest",
}
# declared for a dependency the code reaches without importing it by name (none now)
INDIRECT: dict[str, str] = {}


def imports(*dirs):
    """Top-level third-party modules imported anywhere under dirs (lazy imports included;
    the dirs' own modules, e.g. test helpers, left out)."""
    found = {}
    for d in dirs:
        own = {f[:-3] for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".py")}
        for root, _dirs, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(root, f)
                for n in ast.walk(ast.parse(open(path).read())):
                    names = []
                    if isinstance(n, ast.Import):
                        names = [a.name for a in n.names]
                    elif isinstance(n, ast.ImportFrom) and n.level == 0:
                        names = [n.module]
                    for name in names:
                        top = name.split(".")[0]
                        if top not in sys.stdlib_module_names and top != "latent_vs" and top not in own:
                            found.setdefault(top, os.path.relpath(path, ROOT))
    return found


def declared():
    root = ET.parse(os.path.join(ROOT, "package.xml")).getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend")
    return {tag: {e.text.strip() for e in root.iter(tag)} for tag in tags}


def test_every_import_has_a_declared_key():
    dec = declared()
    run_keys = dec["depend"] | dec["exec_depend"]
    found = imports("latent_vs", "launch")
    unmapped = {m: where for m, where in found.items() if m not in IMPORT_TO_KEY}
    assert not unmapped, f"imports with no rosdep key in the table: {unmapped}"
    missing = {m: IMPORT_TO_KEY[m] for m in found if IMPORT_TO_KEY[m] not in run_keys}
    assert not missing, f"package.xml lacks exec_depend for {missing}"
    assert {IMPORT_TO_KEY[m] for m in imports("test")} - run_keys <= dec["test_depend"]


def test_every_declared_key_resolves():
    dec = declared()
    known = set(KEYS["python"]) | set(KEYS["ros"])
    for tag, keys in dec.items():
        assert keys <= known, f"{tag}: keys the rosdep database does not know: {sorted(keys - known)}"
    for key, rule in KEYS["python"].items():  # a rule for the platforms ROS 2 Jazzy targets
        assert rule.get("ubuntu") is not None or rule.get("*") is not None, key
        assert rule.get("debian") is not None or rule.get("*") is not None, key


def test_no_key_without_an_import():
    dec = declared()
    needed = {IMPORT_TO_KEY[m] for m in imports("latent_vs", "launch")} | set(INDIRECT)
    extra = (dec["depend"] | dec["exec_depend"]) - needed
    assert not extra, f"declared but imported nowhere: {sorted(extra)}"


def test_the_known_gaps_are_closed():
    """What the issue found missing: rcl_interfaces, threadpoolctl, scikit-learn, torch, FAISS, rosbags."""
    run = declared()["exec_depend"]
    assert {"rcl_interfaces", "python3-sklearn", "python3-torch", "python3-faiss", "python3-rosbags-pip"} <= run
