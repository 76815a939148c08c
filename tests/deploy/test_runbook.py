"""RUNBOOK.md says only what is true: every ``transcription ...`` command in it is one the
real CLI accepts, every object it names exists in the manifests, every link resolves.

Each command runs through the CLI's ``main`` (what the ``transcription`` script calls; the
script itself runs ``migrate``), in a fresh interpreter, against its own copy of a
migrated SQLite database holding a tenant and two PERMAFAILED jobs: once with ``--help``
appended, and once as written (``serve`` and ``run`` aside, which never return). The run
as written is what catches a wrong flag: argparse handles ``--help`` the moment it
reads it, before it complains about an unknown option, so ``requeue --sinse 1h --help``
exits 0. A ``requeue`` also runs with ``--dry-run``. All runs share one interpreter, so
the test takes seconds, not a second per command.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployfiles import DEPLOY, ROOT, RUNBOOK, find, knative_services, namespace, scale_annotations
from factories import make_job, make_tenant
from transcription_core.db import create_engine
from transcription_core.models import utcnow
from transcription_core.status import FailureReason

TEXT = RUNBOOK.read_text()
CODE_BLOCK = re.compile(r"^ *```[a-z]*\n(.*?)^ *```", re.M | re.S)
INLINE = re.compile(r"`(transcription [^`]+)`")
OPERATOR = re.compile(r"^[();<>|&]+$")
NEVER_RETURN = {"serve", "run"}
#: Placeholders the runbook uses (the test puts the seeded job, tenant and key in their place).
PLACEHOLDERS = {"JOB_ID", "TENANT", "KEY_PREFIX"}
TENANT = "org-runbook"
#: How the runbook runs every command in the cluster.
IN_CLUSTER = f"kubectl -n {namespace()} exec deploy/transcription-admin --"


def code_lines() -> list[str]:
    lines = []
    for block in CODE_BLOCK.findall(TEXT):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def transcription_argv(line: str) -> list[list[str]]:
    """The arguments of each ``transcription`` invocation on a shell line."""
    words = tokens(line)
    found = []
    for i, word in enumerate(words):
        if word == "transcription" and (i == 0 or words[i - 1] == "--"):
            argv = []
            for arg in words[i + 1 :]:
                if OPERATOR.match(arg):
                    break
                argv.append(arg)
            found.append(argv)
    return found


def runbook_commands() -> list[tuple[str, ...]]:
    commands: dict[tuple[str, ...], None] = {}
    for line in code_lines():
        for argv in transcription_argv(line):
            commands[tuple(argv)] = None
    for span in INLINE.findall(TEXT):
        for argv in transcription_argv(span):
            commands[tuple(argv)] = None
    return list(commands)


COMMANDS = runbook_commands()


def runs_of(argv: tuple[str, ...]) -> list[tuple[str, ...]]:
    runs = [(*argv, "--help")]
    if argv and argv[0] not in NEVER_RETURN and "--help" not in argv:
        runs.append(argv)
        if argv[0] == "requeue" and "--dry-run" not in argv:
            runs.append((*argv, "--dry-run"))
    return runs


def cli() -> list[str]:
    script = Path(sys.executable).parent / "transcription"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "transcription_cli"]


async def _seed(url: str) -> dict[str, str]:
    """The seeded values of the placeholders."""
    engine = create_engine(url, "test-runbook", 1)
    try:
        tenant = await make_tenant(engine, TENANT)
        job = await make_job(
            engine,
            TENANT,
            status="PERMAFAILED",
            failure_reason=FailureReason.MODEL_ERROR.value,
            failure_detail="the model server answered 500",
            attempts=3,
            completed_at=utcnow(),
        )
        await make_job(
            engine,
            TENANT,
            status="PERMAFAILED",
            failure_reason=FailureReason.DOWNLOAD_FORBIDDEN.value,
            failure_detail="the media URL answered 403",
            attempts=1,
            completed_at=utcnow(),
        )
        return {"JOB_ID": str(job.id), "TENANT": TENANT, "KEY_PREFIX": tenant.api_key[:12]}
    finally:
        await engine.dispose()


#: Runs many command lines through the CLI's ``main`` in one fresh interpreter, each on its
#: own database file, and prints their exit codes and output as JSON.
DRIVER = r"""
import contextlib, io, json, os, sys
from transcription_cli.main import main

results = []
for db, argv in json.load(sys.stdin):
    os.environ["DATABASE_URL"] = "sqlite+aiosqlite:///" + db
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}")
            code = 1
    results.append([code, out.getvalue()])
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], tuple[int, str]]:
    """Every run of every runbook command, by its argv."""
    root = tmp_path_factory.mktemp("runbook")
    template = root / "template.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{template}", "USER": "oncall"}
    # The console script itself, as an operator runs it.
    migrated = subprocess.run(
        [*cli(), "migrate"], env=env, capture_output=True, text=True, check=False
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    seeded = asyncio.run(_seed(env["DATABASE_URL"]))
    assert set(seeded) == PLACEHOLDERS

    runs = [run for argv in COMMANDS for run in runs_of(argv)]
    batch = []
    for index, run in enumerate(runs):
        db = root / f"run{index}.db"
        shutil.copyfile(template, db)
        batch.append([str(db), [seeded.get(arg, arg) for arg in run]])
    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(batch),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcomes = [(code, output) for code, output in json.loads(done.stdout)]
    return dict(zip(runs, outcomes, strict=True))


def test_the_runbook_has_the_commands_an_operator_needs() -> None:
    firsts = {" ".join(argv[:2]) for argv in COMMANDS}
    for needed in [
        "queue-depth",
        "stats --since",
        "requeue --since",
        "limit set",
        "limit show",
        "jobs show",
        "tenants create",
    ]:
        assert any(first.startswith(needed) for first in firsts), needed
    assert ("requeue", "--since", "1h", "--dry-run") in COMMANDS


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_runbook_command_is_accepted_by_the_cli(
    argv: tuple[str, ...], results: dict[tuple[str, ...], tuple[int, str]]
) -> None:
    for run in runs_of(argv):
        code, output = results[run]
        assert code == 0, f"transcription {' '.join(run)} exited {code}:\n{output}"


def test_requeue_never_touches_download_errors_unless_asked(
    results: dict[tuple[str, ...], tuple[int, str]],
) -> None:
    code, output = results[("requeue", "--since", "1h", "--dry-run")]
    assert code == 0
    assert "MODEL_ERROR" in output
    assert "DOWNLOAD_FORBIDDEN" not in output


def test_commands_in_the_cluster_run_one_way() -> None:
    for line in code_lines():
        if transcription_argv(line) and not line.startswith("transcription "):
            assert line.startswith(IN_CLUSTER + " transcription "), line


def test_kubectl_commands_name_objects_that_exist() -> None:
    services = knative_services()
    annotation_keys = {key for name in services for key in scale_annotations(name)}
    for line in code_lines():
        words = tokens(line)
        if not words or words[0] != "kubectl":
            continue
        if "-n" in words:
            assert words[words.index("-n") + 1] == namespace(), line
        for word in words:
            if word.startswith("deploy/") and not (ROOT / word).exists():
                find("Deployment", word.removeprefix("deploy/"))
            if word.startswith("job/"):
                find("Job", word.removeprefix("job/"))
            if word.startswith("serving.knative.dev/service="):
                assert word.split("=", 1)[1] in services, line
        if "ksvc" in words[:-1]:
            assert words[words.index("ksvc") + 1] in services, line
        if "-c" in words:
            service = next(w.split("=", 1)[1] for w in words if "knative.dev/service=" in w)
            container = services[service]["spec"]["template"]["spec"]["containers"][0]
            assert words[words.index("-c") + 1] == container["name"], line
        if "-p" in words:
            payload = json.loads(words[words.index("-p") + 1])
            template = payload["spec"].get("template", {})
            for key in template.get("metadata", {}).get("annotations", {}):
                assert key in annotation_keys, f"{key} is not used by the manifests"
            for target in payload["spec"].get("traffic", []):
                assert sum(t["percent"] for t in payload["spec"]["traffic"]) == 100
                assert set(target) <= {"revisionName", "latestRevision", "percent", "tag"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_to_a_section_resolves() -> None:
    anchors = {slug(h) for h in re.findall(r"^#{1,6} (.+)$", TEXT, re.M)}
    links = set(re.findall(r"\]\(#([a-z0-9-]+)\)", TEXT))
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            links |= set(re.findall(r"RUNBOOK\.md#([a-z0-9-]+)", path.read_text()))
    missing = links - anchors
    assert not missing, f"links to sections RUNBOOK.md does not have: {sorted(missing)}"


def test_every_failure_reason_has_an_answer() -> None:
    for reason in FailureReason:
        assert f"`{reason.value}`" in TEXT, reason


def test_the_old_annotation_names_are_explained() -> None:
    assert "autoscaling.knative.dev/minScale" in TEXT
    assert "autoscaling.knative.dev/maxScale" in TEXT


def test_the_event_actors_it_names_are_the_ones_the_code_records() -> None:
    """The actors the runbook lists ("who made it") are those the services, the CLI and the
    API write into ``job_events.actor`` (a default ``actor: str = "..."`` or an
    ``actor=f"...:{...}"``), and no other."""
    said = re.search(r"who made it \(([^)]*)\)", " ".join(TEXT.split()))
    assert said, "the runbook no longer says who makes each change"
    named = {
        name.split(":")[0] + (":" if ":" in name else "")
        for name in re.findall(r"`([^`]+)`", said[1])
    }
    recorded: set[str] = set()
    for folder in ("services", "shared", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            recorded |= set(re.findall(r'actor: str = "([a-z-]+)"', text))
            recorded |= {f"{p}:" for p in re.findall(r'actor=f"([a-z-]+):', text)}
    assert named == recorded
