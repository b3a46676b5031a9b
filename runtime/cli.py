"""`bundle doctor` and `bundle run`: the runtime's commands (registered in builder/cli.py).

Imports click and the standard library only; torch is imported by `doctor` for
the GPU query, and only when it is installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from runtime import constants
from runtime.sizes import human_size
from runtime.stacks import UnknownStackError, get_stack, list_stacks
from runtime.stacks.launch import activate_reporting, prepare_run, use_strict

#: Libraries whose versions doctor reports (distribution names).
LIBRARIES = (
    "offline-bundle", "torch", "torchvision", "transformers", "timm", "huggingface_hub",
    "safetensors", "diffusers", "librosa", "numpy", "accelerate",
)


@dataclass
class RoleReport:
    """What a run of the stack would load for one role, or why it cannot."""

    role: str
    names: list[str]  # what the stack asks for (any one of them)
    required: bool  # the stack's default run needs it
    status: str  # "ok" | "fallback" | "missing"
    used: str = ""  # "ID = REF@REV (bundle NAME)" of the artifact a run would load
    detail: str = ""  # the fallback's reason, or what to add
    replaces: str = ""  # status "fallback": the id of the incomplete primary it stands in for


@dataclass
class StackReport:
    name: str
    status: str  # "ok" | "fallback" (runs, on a fallback) | "missing" | "unknown"
    needs: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    detail: str = ""
    roles: list[RoleReport] = field(default_factory=list)


@dataclass
class GpuReport:
    available: bool
    name: str = ""
    capability: str = ""
    fp16: bool = False
    bf16: bool = False
    detail: str = ""


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in LIBRARIES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def gpu_report() -> GpuReport:
    """GPU name, compute capability and the precisions that are fast on it.

    bf16 counts only from compute capability 8.0 (Ampere): torch reports bf16 as
    "supported" on a T4 (7.5) too, where it is emulated and slow.
    """
    if importlib.util.find_spec("torch") is None:
        return GpuReport(False, detail="torch is not installed")
    import torch

    if not torch.cuda.is_available():
        return GpuReport(False, detail="no CUDA GPU visible: training runs in fp32 on the CPU")
    major, minor = torch.cuda.get_device_capability(0)
    return GpuReport(
        True,
        name=torch.cuda.get_device_name(0),
        capability=f"{major}.{minor}",
        fp16=(major, minor) >= (5, 3),
        bf16=major >= 8,
        detail="" if major >= 8 else "no fast bf16 below compute capability 8.0: use fp16 + GradScaler",
    )


def _describe(found: Any) -> str:
    a = found.artifact
    ref = f"{a.ref}@{a.commit[:12]}" if a.commit else a.ref
    return f"{a.id} = {ref} (bundle {found.bundle.name})"


def _role_report(role: str, names: tuple[str, ...], required: bool, bundles: list[Any]) -> RoleReport:
    """What resolve() would do for the role's names: the first that a bundle lists wins."""
    from runtime.resolve import plan, spec_snippet

    report = RoleReport(role, list(names), required, "missing")
    for name in names:
        listed, used, why = plan(name, bundles)
        if listed is None:
            continue
        if used is None:
            report.detail = (f"{_describe(listed)} is incomplete and no declared fallback is "
                             "complete; rebuild or re-attach the bundle (bundle verify shows what)")
            return report
        report.status = "ok" if why is None else "fallback"
        report.used = _describe(used)
        report.detail = why or ""
        report.replaces = listed.artifact.id if why is not None else ""
        return report
    report.detail = "add to the spec and rebuild: " + spec_snippet(names[0]).replace("\n", "; ")
    return report


def _stack_reports(bundles: list[Any]) -> list[StackReport]:
    declared: list[str] = []
    for bundle in bundles:
        for name in bundle.manifest.stacks:
            if name not in declared:
                declared.append(name)
    reports = []
    for name in declared:
        try:
            stack = get_stack(name)
        except UnknownStackError:
            reports.append(StackReport(name, "unknown", detail="not a stack this runtime knows"))
            continue
        except ImportError as e:
            reports.append(StackReport(name, "unknown", detail=f"cannot import its module: {e}"))
            continue
        required, optional = stack.roles()
        roles = [_role_report(r, n, True, bundles) for r, n in required.items()]
        roles += [_role_report(r, n, False, bundles) for r, n in optional.items()]
        missing = [r.role for r in roles if r.required and r.status == "missing"]
        if stack.one_of_optional and not any(r.status != "missing" for r in roles if not r.required):
            missing.append("one of: " + ", ".join(optional))
        status = "missing" if missing else (
            "fallback" if any(r.status == "fallback" for r in roles) else "ok")
        reports.append(StackReport(
            name, status, needs=[" | ".join(r.names) for r in roles if r.required],
            missing=missing, roles=roles))
    return reports


def doctor_report(fallbacks_fail: bool = False) -> dict[str, Any]:
    """Everything `bundle doctor` shows, as plain data (what --json prints).

    Args:
        fallbacks_fail: count a role that would run on a declared fallback as a
            failure (`bundle doctor --no-fallbacks`); by default it is a warning,
            since `bundle run` succeeds on it.
    """
    from runtime.catalog import attach_all
    from runtime.locate import kaggle_model_of, locate

    bundles, problems = attach_all(locate())
    stacks = _stack_reports(bundles)
    gpu = gpu_report()
    from runtime.versions import below_minimum, message

    libraries = _versions()
    too_old = [message(name, v) for name, v in libraries.items() if below_minimum(name, v)]
    # An unknown stack (newer bundle, or a stack not written yet) is shown, not fatal:
    # the runtime cannot say what it needs.
    # Only what would make a run fail fails the doctor: a missing artifact a stack needs,
    # not an incomplete one whose declared fallback a run takes (unless asked).
    failing = ("missing", "fallback") if fallbacks_fail else ("missing",)
    ok = (bool(bundles) and not too_old and all(s.status not in failing for s in stacks)
          and not _blocking(problems, stacks))
    hidden = _shadowed(bundles)
    return {
        "ok": ok,
        "searched": {"bundle_path": [str(p) for p in constants.bundle_path_entries()],
                     "roots": list(constants.search_roots())},
        "bundles": [
            {"name": b.name, "version": b.version, "path": str(b.path),
             "artifacts": [a.id for a in b.manifest.artifacts], "size": b.manifest.size,
             "stacks": list(b.manifest.stacks), "kaggle_model": kaggle_model_of(b.path),
             # artifacts a run loads from an earlier copy instead (resolve() takes the first)
             "shadowed": ({"artifacts": hidden[i][0], "by": str(hidden[i][1].path),
                           "by_version": hidden[i][1].version} if i in hidden else None)}
            for i, b in enumerate(bundles)
        ],
        "problems": [str(p) for p in problems],
        "stacks": [asdict(s) for s in stacks],
        "gpu": asdict(gpu),
        "libraries": libraries,
        "unsupported": too_old,
    }


def _shadowed(bundles: list[Any]) -> dict[int, tuple[list[str], Any]]:
    """index -> (artifact ids, the earlier bundle that serves them) for every attached bundle
    whose artifacts a run would load from another copy: resolve() takes the first bundle in
    search order that lists a name, so of two copies of a bundle (a dataset and a Kaggle
    Model, say) only the one found first is ever used."""
    from runtime.resolve import find

    hidden: dict[int, tuple[list[str], Any]] = {}
    for index, bundle in enumerate(bundles):
        ids: list[str] = []
        by = None
        for artifact in bundle.manifest.artifacts:
            found = find(artifact.ref, bundles)
            if found is not None and found.bundle is not bundle:
                ids.append(artifact.id)
                by = by or found.bundle
        if ids:
            hidden[index] = (ids, by)
    return hidden


def _blocking(problems: list[Any], stacks: list[StackReport]) -> bool:
    """A problem fails the doctor unless it only concerns an artifact a fallback covers."""
    covered = {r.replaces for s in stacks for r in s.roles if r.status == "fallback"}
    return any(p.artifact is None or p.artifact not in covered for p in problems)


def _print_report(report: dict[str, Any], verbose: bool = False) -> None:
    echo = click.echo
    echo(f"Bundles ({len(report['bundles'])} found):")
    for b in report["bundles"]:
        echo(f"  {b['name']} {b['version']}  {b['path']}  "
             f"({len(b['artifacts'])} artifacts, {human_size(b['size'])})")
        if km := b.get("kaggle_model"):
            others = [v for v in km["attached"] if v != km["version"]]
            also = f"; also attached: version {', '.join(map(str, others))}, not used" if others else ""
            echo(f"    Kaggle Model {km['handle']}, version {km['version']} (the highest attached){also}")
        if hidden := b.get("shadowed"):
            every = len(hidden["artifacts"]) == len(b["artifacts"])
            what = "NOT USED: every artifact it holds" if every else (
                f"PARTLY USED: {', '.join(hidden['artifacts'])}")
            echo(f"    {what} is loaded from {hidden['by']} (version {hidden['by_version']}, "
                 "found first); detach one copy, or order them with BUNDLE_PATH")
    if not report["bundles"]:
        echo("  none: attach the bundle (Kaggle: Add Input) or set BUNDLE_PATH=/path/to/bundle")
    if verbose or not report["bundles"]:
        searched = report["searched"]
        echo(f"  looked in $BUNDLE_PATH ({', '.join(searched['bundle_path']) or 'unset'}), then:")
        for pattern in searched["roots"]:
            echo(f"    {pattern}")
    for p in report["problems"]:
        echo(f"  PROBLEM {p}")
    if report["stacks"]:
        echo("Stacks the bundles declare:")
    for s in report["stacks"]:
        if s["status"] == "unknown":
            echo(f"  {s['name']}: unknown stack ({s['detail']})")
            continue
        head = {"ok": "ok", "fallback": "ok, on a FALLBACK (WARNING)",
                "missing": f"MISSING {', '.join(s['missing'])}"}[s["status"]]
        echo(f"  {s['name']}: {head}" + ("" if s["roles"] else " (needs no artifact)"))
        for r in s["roles"]:
            optional = "" if r["required"] else " (optional)"
            if r["status"] == "ok":
                echo(f"    {r['role']}{optional}: {r['used']}")
            elif r["status"] == "fallback":
                echo(f"    {r['role']}{optional}: WARNING: fallback {r['used']}; {r['detail']}")
            else:
                echo(f"    {r['role']}{optional}: {'not attached' if not r['required'] else 'MISSING'}: "
                     f"{r['detail']}")
    g = report["gpu"]
    if g["available"]:
        echo(f"GPU: {g['name']}, compute capability {g['capability']}: "
             f"fp16 {'yes' if g['fp16'] else 'no'}, bf16 {'yes' if g['bf16'] else 'no'}"
             + (f" ({g['detail']})" if g["detail"] else ""))
    else:
        echo(f"GPU: none ({g['detail']})")
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items() if v)
    echo(f"Libraries: {libs}")
    for text in report["unsupported"]:
        echo(f"  UNSUPPORTED {text}")
    echo("OK" if report["ok"] else "NOT OK: see MISSING / PROBLEM / UNSUPPORTED above")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-fallbacks", is_flag=True,
              help="Fail when a stack would run on a declared fallback (a warning by default).")
@click.option("-v", "--verbose", is_flag=True, help="Also list every place bundles are looked for.")
def doctor_command(as_json: bool, no_fallbacks: bool, verbose: bool) -> None:
    """Show the bundles found, what each stack would load per role, the GPU and library versions.

    For every role of every stack the bundles declare (a backbone, a student, a
    --config's model) it names the artifact a run would load, or the declared
    fallback it would take instead (a WARNING), or what to add to the spec.
    Exits 1 when no bundle is found, a bundle file is damaged and no fallback
    covers it, a stack lacks an artifact its default run needs, or a library is
    older than the runtime supports; with --no-fallbacks also when a run would
    take a fallback.

    When two attached bundles hold the same artifact (the same bundle attached as a
    dataset and as a Kaggle Model), a run loads the copy found first; doctor says
    which, and marks the other NOT USED.

    \b
    Examples:
      bundle doctor
      bundle doctor -v          # also every place bundles are looked for
      BUNDLE_PATH=bundles-dist/emotion-vit bundle doctor --json
    """
    report = doctor_report(fallbacks_fail=no_fallbacks)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report, verbose)
    if not report["ok"]:
        sys.exit(1)


class _RunCommand(click.Command):
    """`bundle run`: notes whether the words after the options came after a `--`.

    `bundle run [OPTIONS] STACK ...` runs a stack; `bundle run [OPTIONS] -- COMMAND ...`
    runs any command. click drops the `--` while parsing, so it is looked for here.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        leading = []
        for arg in args:
            if arg == "--" or not arg.startswith("-"):
                break
            leading.append(arg)
        ctx.meta["run_external"] = len(leading) < len(args) and args[len(leading)] == "--"
        return super().parse_args(ctx, args)


@click.command(
    "run",
    cls=_RunCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "allow_interspersed_args": False},
    epilog="Known stacks: " + ", ".join(list_stacks()),
)
@click.option("--strict", is_flag=True,
              help="Refuse every non-loopback network connection (runtime.activate(strict=True)); "
                   "with -- COMMAND, every Python process of the command is strict from its "
                   "first line, whether or not it calls runtime.activate().")
@click.option("--no-network", is_flag=True,
              help="Run in a private network namespace with loopback only (Linux; root, or "
                   "unprivileged user namespaces): child processes and native code cannot reach "
                   "the network either. Fails where the system forbids it.")
@click.argument("stack", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx: click.Context, strict: bool, no_network: bool, stack: str | None,
                args: tuple[str, ...]) -> Any:
    """Run a stack command offline: bundle run STACK COMMAND [OPTIONS].

    The attached bundles are activated first, so models load from them. After
    `--`, any command runs with the bundles' offline environment instead
    (HF_HUB_OFFLINE, HF_HUB_CACHE and TORCH_HOME pointing at the bundles); its
    exit code is passed through.

    \b
    Examples:
      bundle run emotion-vit train --help
      bundle run --strict landcover predict --checkpoint best.pt images/
      bundle run --strict --no-network -- python my_notebook_script.py
      bundle run --no-network -- torchrun --nproc-per-node 2 -m runtime.stacks.emotion_vit train ...
    """
    if stack is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    if ctx.meta.get("run_external"):
        sys.exit(_run_external([stack, *args], strict=strict, no_network=no_network))
    try:
        record = get_stack(stack)
    except UnknownStackError as e:
        raise click.UsageError(str(e), ctx) from None
    except ImportError as e:
        # Its module exists and cannot be imported: a missing optional dependency.
        raise click.ClickException(
            f"stack {stack!r} cannot be loaded ({e}); install the stacks extra: "
            "pip install 'offline-bundle[stacks]'"
        ) from None
    group: click.Command = record.cli
    # No parent context: click would print the usage as "bundle run [STACK] [ARGS]... STACK".
    sub_ctx = group.make_context(f"bundle run {stack}", list(args))
    if not ({"--help", "-h"} & set(args)) and no_network:
        _isolate()
    # The stack's own options are checked first; then the bundles are activated as this
    # command needs them (none at all for a run that loads nothing from a bundle).
    use_strict(strict)
    prepare_run(record, sub_ctx, args, strict=None, label=f"bundle run {stack}")
    with sub_ctx:
        return group.invoke(sub_ctx)


def _isolate() -> None:
    from runtime.netns import NetworkNamespaceError, isolate

    try:
        click.echo(isolate(), err=True)
    except NetworkNamespaceError as e:
        raise click.ClickException(str(e)) from None


def _run_external(command: list[str], *, strict: bool, no_network: bool) -> int:
    """`bundle run -- COMMAND`: the command, in the activated environment; its exit code."""
    import shutil
    import subprocess

    from runtime import constants

    if shutil.which(command[0]) is None:
        raise click.ClickException(f"command not found: {command[0]!r} (bundle run -- COMMAND ...)")
    if no_network:
        _isolate()
    strict = use_strict(strict)
    activate_reporting(strict=None)
    env = constants.environment()  # activate() set the offline variables, HF_HUB_CACHE, TORCH_HOME
    if strict:
        from runtime.child import with_startup_hook

        # Every Python process of the command is strict from its first line, whether
        # or not it calls runtime.activate() (runtime/_site/sitecustomize.py).
        env[constants.ENV_STRICT] = "1"
        env[constants.ENV_STRICT_CHILD] = "1"
        env = with_startup_hook(env)
    try:
        return subprocess.run(command, env=env).returncode
    except KeyboardInterrupt:
        return 130
