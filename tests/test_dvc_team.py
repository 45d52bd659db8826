"""A team sharing the work through DVC, for real: a local-directory remote and an S3 remote (moto's S3 server).

One project is built as a user who never activated the venv would (PATH without it: the stages find the
project's python through bin/python): `dvc repro`, commit, and an experiment `dvc exp run --temp -S alpha=0.1`.
Then, per remote: `dvc push`, `git push` + `dvc exp push` to a bare git remote; a teammate's fresh clone runs
`dvc pull`, finds `dvc status` clean and `dvc repro` re-running nothing (the report keeps the pulled tables:
its own store is empty), and gets the experiment with `dvc exp pull` / `dvc exp apply`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.dvc_repo import BIN, DVC, free_port, local_server, make_repo, run

pytestmark = pytest.mark.slow

UP_TO_DATE = "Data and pipelines are up to date."
BUCKET = "lmmreg-dvc"
FAKE_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}  # moto accepts any key


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict, float]:
    """(repo, env without the venv on PATH, seconds) after `dvc repro` and a commit."""
    repo = tmp_path_factory.mktemp("team") / "repo"
    t0 = time.time()
    env = make_repo(repo, venv=True)
    assert str(BIN) not in env["PATH"]
    out = run([DVC, "repro"], repo, env)
    assert "Running stage 'train@demo-lmm_reg'" in out
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "baseline run"], repo, env)
    return repo, env, time.time() - t0


@pytest.fixture
def s3_remote(tmp_path):
    """The URL of a bucket on moto's S3 server (127.0.0.1) and the remote options DVC needs for it."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with local_server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], url=f"{endpoint}/moto-api/",
                      log=tmp_path / "moto.log"):
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}/cache", {"endpointurl": endpoint, "region": "us-east-1"}, endpoint


def _s3_objects(endpoint: str) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET))


@pytest.mark.parametrize("kind, alpha", [("local", "0.1"), ("s3", "0.2")])  # alphas differ: no run-cache hit
def test_push_clone_pull_is_up_to_date_and_shares_experiments(project, kind, alpha, tmp_path, request):
    repo, env, repro_s = project
    t0 = time.time()
    # The remote goes into .dvc/config (committed: every clone knows it); S3 keys into .dvc/config.local (not).
    # Measured: keys in config.local for a remote that an experiment's commit does not define make `dvc exp push`
    # fail ("expected 'url' for dictionary value @ data['remote'][...]"), so the remote comes first.
    if kind == "s3":
        url, options, endpoint = request.getfixturevalue("s3_remote")
    else:
        url, options, endpoint = str(tmp_path / "dvc-remote"), {}, None
    run([DVC, "remote", "add", "-d", "-f", "team", url], repo, env)
    for key, value in options.items():
        run([DVC, "remote", "modify", "team", key, value], repo, env)
    if kind == "s3":
        for key, value in FAKE_KEYS.items():
            run([DVC, "remote", "modify", "--local", "team", key, value], repo, env)
    # Only the config: an earlier test's experiment stamped metrics/last_run.json (its runs are in the store and the
    # workspace report has not seen them yet), and committing that without `dvc repro` would leave report changed.
    run(["git", "commit", "-qm", f"DVC remote: {kind}", ".dvc/config"], repo, env)
    out = run([DVC, "exp", "run", "--temp", "-S", f"alpha={alpha}"], repo, env)  # a temp checkout: no .venv there
    assert "Running stage 'train@demo-lmm_reg'" in out
    exp_name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    exp_s = time.time() - t0
    pushed = _count(r"(\d+) files? pushed", run([DVC, "push"], repo, env))
    assert pushed > 0
    if kind == "s3":
        assert _s3_objects(endpoint) == pushed

    origin = tmp_path / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    run(["git", "push", "-q", str(origin), "main"], repo, env)
    run([DVC, "exp", "push", str(origin), exp_name], repo, env)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    (clone / ".venv").symlink_to(repo / ".venv")  # the teammate ran `make setup`; the venv is not activated
    if kind == "s3":
        for key, value in FAKE_KEYS.items():
            run([DVC, "remote", "modify", "--local", "team", key, value], clone, env)
    out = run([DVC, "pull"], clone, env)
    fetched, added = _count(r"(\d+) files? fetched", out), _count(r"(\d+) files? added", out)
    assert fetched == pushed and added > 0, out
    assert UP_TO_DATE in run([DVC, "status"], clone, env)
    out = run([DVC, "repro"], clone, env)
    assert "Running stage" not in out, out
    tables = (repo / "reports/tables.md").read_text()
    table1 = tables.split("## Table 1")[1].split("## Table 2")[0]
    assert (clone / "reports/tables.md").read_text() == tables and "missing" not in table1 and "(n=1)" in table1
    # Forced, against the clone's empty store: the report rebuilds from the snapshot it pulled, not "missing".
    out = run([DVC, "repro", "-s", "-f", "report"], clone, env)
    assert "Running stage 'report'" in out
    assert (clone / "reports/tables.md").read_text() == tables
    assert UP_TO_DATE in run([DVC, "status"], clone, env)

    # The experiment travels too: its git refs to the git remote, its outputs through the DVC remote.
    run([DVC, "exp", "pull", "origin", exp_name], clone, env)
    shown = json.dumps(json.loads(run([DVC, "exp", "show", "--json"], clone, env)))
    assert exp_name in shown and f'"alpha": {alpha}' in shown
    run([DVC, "exp", "apply", exp_name], clone, env)
    assert f"alpha: {alpha}" in (clone / "params.yaml").read_text()
    assert json.loads((clone / "metrics/demo.json").read_text()) == json.loads(
        run(["git", "show", f"{_exp_ref(repo, env, exp_name)}:metrics/demo.json"], repo, env))
    assert UP_TO_DATE in run([DVC, "status"], clone, env)
    print(f"\n{kind} remote: {pushed} files pushed, {fetched} fetched ({added} added) by the clone; "
          f"project repro {repro_s:.0f} s (once), remote + exp run --temp {exp_s:.0f} s, "
          f"share + clone checks {time.time() - t0 - exp_s:.0f} s")


def _exp_ref(repo: Path, env: dict, name: str) -> str:
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo, env).split()
    return next(r for r in refs if r.endswith(f"/{name}"))
