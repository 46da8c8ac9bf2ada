"""Evaluate this package's launch files without `launch` / `launch_ros` (not installable here).

Stand-ins for the few launch classes the files use are put into sys.modules while a file's
generate_launch_description() runs; the result is resolved with given launch arguments
into plain data: each Node's package, executable, name, namespace, parameters (files and
dicts), remappings and ROS arguments; each ExecuteProcess's command; environment settings.
Which launch arguments were read while resolving is recorded, so a test can tell a declared
argument that nothing uses. `command_line` turns a latent_vs Node into the command
`ros2 launch` would run (`python -m latent_vs.ros.<node> --ros-args ...`).

Semantics follow launch_ros where it matters here: a dict parameter given as a plain
substitution is read as YAML, ParameterValue(value_type=...) converts, an empty namespace
means none and a relative one is made absolute, conditions are IfCondition/UnlessCondition
on 'true'/'false'."""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import sys
import types
from dataclasses import dataclass, field

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Ctx:
    def __init__(self, args: dict[str, str], share: str):
        self.args, self.share, self.used = dict(args), share, set()


class Substitution:
    def perform(self, ctx: _Ctx) -> str:
        raise NotImplementedError


def text(value, ctx: _Ctx) -> str:
    """A substitution, a string or a list of them (concatenated, as launch does)."""
    if isinstance(value, Substitution):
        return value.perform(ctx)
    if isinstance(value, (list, tuple)):
        return "".join(text(v, ctx) for v in value)
    return str(value)


class LaunchConfiguration(Substitution):
    def __init__(self, name, default=None):
        self.name, self.default = name, default

    def perform(self, ctx):
        ctx.used.add(self.name)
        if self.name in ctx.args:
            return ctx.args[self.name]
        if self.default is None:
            raise KeyError(f"launch configuration '{self.name}' is not set")
        return text(self.default, ctx)


class PathJoinSubstitution(Substitution):
    def __init__(self, parts):
        self.parts = parts

    def perform(self, ctx):
        return os.path.join(*[text(p, ctx) for p in self.parts])


class FindPackageShare(Substitution):
    def __init__(self, package):
        self.package = package

    def perform(self, ctx):
        assert self.package == "latent_vs", f"unknown package share {self.package}"
        return ctx.share  # the repository lays out config/, launch/, worlds/ as the share does


class PythonExpression(Substitution):
    def __init__(self, parts):
        self.parts = parts

    def perform(self, ctx):
        return str(eval(text(self.parts, ctx), {}, {}))


class EnvironmentVariable(Substitution):
    def __init__(self, name, default_value=""):
        self.name, self.default_value = name, default_value

    def perform(self, ctx):
        return os.environ.get(text(self.name, ctx), text(self.default_value, ctx))


class TextSubstitution(Substitution):
    def __init__(self, text=""):
        self.t = text

    def perform(self, ctx):
        return self.t


class ParameterValue:
    def __init__(self, value, value_type=None):
        self.value, self.value_type = value, value_type

    def resolve(self, ctx):
        s = text(self.value, ctx)
        if self.value_type is str:
            return s
        v = yaml.safe_load(s) if s.strip() else ""
        if self.value_type is bool:
            assert isinstance(v, bool), f"'{s}' is not a bool"
        elif self.value_type is not None:
            v = self.value_type(v)
        return v


class _Condition:
    def __init__(self, predicate):
        self.predicate = predicate

    def evaluate(self, ctx) -> bool:
        s = text(self.predicate, ctx).strip().lower()
        assert s in ("true", "false", "1", "0"), f"condition '{s}' is not true/false"
        return s in ("true", "1")


class IfCondition(_Condition):
    pass


class UnlessCondition(_Condition):
    def evaluate(self, ctx):
        return not super().evaluate(ctx)


class Action:
    def __init__(self, *args, condition=None, **kwargs):
        self.args, self.kwargs, self.condition = args, kwargs, condition


class DeclareLaunchArgument(Action):
    def __init__(self, name, default_value=None, description="", choices=None, **kw):
        super().__init__(**kw)
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class Node(Action):
    pass


class ExecuteProcess(Action):
    pass


class SetEnvironmentVariable(Action):
    def __init__(self, name, value, **kw):
        super().__init__(**kw)
        self.name, self.value = name, value


class AppendEnvironmentVariable(SetEnvironmentVariable):
    pass


class LogInfo(Action):
    pass


class LaunchDescription:
    def __init__(self, entities=()):
        self.entities = list(entities)


def _fake_modules():
    mods = {}

    def mod(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m

    mod("launch", LaunchDescription=LaunchDescription)
    mod("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument, ExecuteProcess=ExecuteProcess,
        SetEnvironmentVariable=SetEnvironmentVariable, AppendEnvironmentVariable=AppendEnvironmentVariable,
        LogInfo=LogInfo)
    mod("launch.conditions", IfCondition=IfCondition, UnlessCondition=UnlessCondition)
    mod("launch.substitutions", LaunchConfiguration=LaunchConfiguration, PathJoinSubstitution=PathJoinSubstitution,
        PythonExpression=PythonExpression, EnvironmentVariable=EnvironmentVariable,
        TextSubstitution=TextSubstitution)
    mod("launch_ros")
    mod("launch_ros.actions", Node=Node)
    mod("launch_ros.parameter_descriptions", ParameterValue=ParameterValue)
    mod("launch_ros.substitutions", FindPackageShare=FindPackageShare)
    return mods


@contextlib.contextmanager
def _stubbed():
    mods = _fake_modules()
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@dataclass
class NodeRun:
    package: str
    executable: str
    name: str
    namespace: str
    params: list            # file paths (str) and dicts
    remappings: list        # (from, to)
    ros_arguments: list
    enabled: bool


@dataclass
class Launched:
    declared: dict                      # name -> default text (None: required)
    nodes: list = field(default_factory=list)
    processes: list = field(default_factory=list)   # (cmd list, enabled)
    env: dict = field(default_factory=dict)
    used: set = field(default_factory=set)

    def node(self, name) -> NodeRun:
        (n,) = [n for n in self.nodes if n.name == name]
        return n


def _param_value(v, ctx):
    if isinstance(v, ParameterValue):
        return v.resolve(ctx)
    if isinstance(v, Substitution) or (isinstance(v, list) and any(isinstance(x, Substitution) for x in v)):
        s = text(v, ctx)  # launch_ros reads a substituted parameter as YAML
        return yaml.safe_load(s) if s.strip() else ""
    return v


def load(path: str):
    """The module of a launch file, imported with the stand-ins."""
    with _stubbed():
        spec = importlib.util.spec_from_file_location(f"launch_file_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module, module.generate_launch_description()


def evaluate(path: str, **overrides) -> Launched:
    """Resolve a launch file with the given launch arguments (the rest at their defaults)."""
    _module, ld = load(path)
    declared = {a.name: a.default_value for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    unknown = set(overrides) - set(declared)
    assert not unknown, f"{os.path.basename(path)} declares no argument {sorted(unknown)}"
    ctx = _Ctx({}, ROOT)
    for name, default in declared.items():  # defaults may refer to earlier arguments
        ctx.args[name] = str(overrides[name]) if name in overrides else (
            text(default, ctx) if default is not None else None)
    ctx.used.clear()
    out = Launched(declared={k: v for k, v in declared.items()})
    for e in ld.entities:
        enabled = e.condition.evaluate(ctx) if getattr(e, "condition", None) is not None else True
        if isinstance(e, Node):
            kw = e.kwargs
            ns = text(kw.get("namespace", ""), ctx).strip()
            ns = "" if ns in ("", "/") else ("/" + ns.strip("/"))
            params = []
            for p in kw.get("parameters", []):
                if isinstance(p, dict):
                    params.append({k: _param_value(v, ctx) for k, v in p.items()})
                else:
                    params.append(text(p, ctx))
            out.nodes.append(NodeRun(
                package=text(kw["package"], ctx), executable=text(kw["executable"], ctx),
                name=text(kw.get("name", kw["executable"]), ctx), namespace=ns, params=params,
                remappings=[(text(a, ctx), text(b, ctx)) for a, b in kw.get("remappings", [])],
                ros_arguments=[text(a, ctx) for a in kw.get("ros_arguments", [])], enabled=enabled))
        elif isinstance(e, ExecuteProcess):
            out.processes.append(([text(c, ctx) for c in e.kwargs["cmd"]], enabled))
        elif isinstance(e, SetEnvironmentVariable):
            out.env[text(e.name, ctx)] = text(e.value, ctx)
    out.used = set(ctx.used)
    return out


def console_scripts() -> dict[str, str]:
    """executable -> module of setup.py's console scripts."""
    import re
    text_ = open(os.path.join(ROOT, "setup.py")).read()
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+):main"', text_))


def command_line(node: NodeRun, tmpdir: str) -> list[str]:
    """What `ros2 launch` runs for a latent_vs node (dict parameters go through a file, as
    launch_ros does)."""
    assert node.package == "latent_vs"
    module = console_scripts()[node.executable]
    cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        cmd += ["-r", f"__ns:={node.namespace}"]
    for i, p in enumerate(node.params):
        if isinstance(p, dict):
            f = os.path.join(tmpdir, f"{node.name}_params_{i}.yaml")
            with open(f, "w") as fh:
                yaml.safe_dump({"/**": {"ros__parameters": p}}, fh)
            p = f
        cmd += ["--params-file", p]
    for a, b in node.remappings:
        cmd += ["-r", f"{a}:={b}"]
    return cmd + list(node.ros_arguments)


def launch_calls(path):
    """(package, executable, name) of each Node(...) in a launch file, read statically."""
    tree = ast.parse(open(path).read())
    out = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            kw = {k.arg: k.value for k in call.keywords}
            out.append(tuple(kw[k].value if isinstance(kw.get(k), ast.Constant) else None
                             for k in ("package", "executable", "name")))
    return out
