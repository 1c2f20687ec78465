"""Hub ids in `models.<size>.name_or_path`: their syntax checked when the config is parsed,
their existence asked once per run before any job (a fake hub on loopback stands in for
huggingface.co; the machine running the tests has no network)."""

from __future__ import annotations

import copy
import http.server
import json
import os
import socket
import threading

import pytest
import yaml

from asymprune import hub_check as H
from asymprune import workflow_config as W
from test_workflow import MICRO, REPO, dry, snakemake, write_config

KNOWN = "someone/tiny-t5"                          # the fake hub has it
UNKNOWN = "google/flan-t5-xxxl-does-not-exist"     # a valid id the hub does not know


class FakeHub(http.server.BaseHTTPRequestHandler):
    """`GET /api/models/<id>` (what `huggingface_hub.model_info` asks): 200 for KNOWN, else
    404 with the hub's `X-Error-Code: RepoNotFound`."""

    def do_GET(self):
        if self.path.startswith(f"/api/models/{KNOWN}"):
            code, body, headers = 200, {"id": KNOWN, "sha": "0" * 40}, {}
        else:
            code, body, headers = 404, {"error": "Repository not found"}, {
                "X-Error-Code": "RepoNotFound"}
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                     **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> str:
    """An endpoint nobody listens on: the connection is refused at once (no network)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def hub_config(*names: str) -> dict:
    cfg = copy.deepcopy(MICRO)
    cfg["models"] = {f"m{i}": {"name_or_path": n} for i, n in enumerate(names)}
    return cfg


def env_with(tmp_path, **extra) -> dict:
    """An empty hub cache, and the given HF_* variables (HF_HUB_OFFLINE only if given)."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return dict(env, HF_HUB_CACHE=str(tmp_path / "hub-cache"), **extra)


def cache_model(cache, repo_id: str) -> None:
    """The layout huggingface_hub's cache keeps of a downloaded config.json."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "1" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")


def test_an_id_with_a_space_stops_the_dry_run_naming_the_key(tmp_path):
    rc, out = dry(tmp_path, write_config(tmp_path / "c.yaml", hub_config("google/flan t5 small")),
                  env=env_with(tmp_path, HF_HUB_OFFLINE="1"))
    assert rc != 0
    assert ("config key models.m0.name_or_path: 'google/flan t5 small' is neither an existing "
            "local folder nor a valid hub id (Repo id must use alphanumeric chars") in out, out
    assert not (tmp_path / "results").exists()


def test_a_local_folder_is_not_taken_for_a_hub_id(tmp_path):
    folder = tmp_path / "my model (v2)"   # no hub id looks like this
    folder.mkdir()
    cfg = hub_config(str(folder), "a/b/c")
    with pytest.raises(W.ConfigError) as e:
        W.load(cfg, REPO / "workflow/schemas/config.schema.yaml")
    assert str(e.value).splitlines() == [
        "config key models.m1.name_or_path: 'a/b/c' is neither an existing local folder nor a "
        "valid hub id (Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
        "'a/b/c'. Use `repo_type` argument if needed.)"]
    assert H.hub_model_ids(cfg["models"]) == {"a/b/c": ["models.m1.name_or_path"]}


def test_the_hub_is_asked_once_per_id(fake_hub, tmp_path, monkeypatch):
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", fake_hub)
    models = hub_config(KNOWN, UNKNOWN, KNOWN)["models"]
    check = H.check_hub_models(models, timeout=5)
    assert check.unchecked == []
    assert check.missing == [f"  {UNKNOWN} (config key models.m1.name_or_path): the hub has no "
                             f"such model (or a private one: set HF_TOKEN)"]
    # no network: the first id waits for its error, the others are not asked
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", closed_port())
    check = H.check_hub_models(models, timeout=5)
    assert check.missing == []
    assert [line.split(":")[0] for line in check.unchecked] == [
        f"  {KNOWN} (config key models.m0.name_or_path, models.m2.name_or_path)",
        f"  {UNKNOWN} (config key models.m1.name_or_path)"]
    assert "could not reach the hub (ConnectError" in check.unchecked[0]
    assert "not asked, the hub did not answer before" in check.unchecked[1]


def test_a_model_the_hub_does_not_have_stops_the_dry_run(fake_hub, tmp_path):
    rc, out = dry(tmp_path, write_config(tmp_path / "c.yaml", hub_config(UNKNOWN)),
                  env=env_with(tmp_path, HF_ENDPOINT=fake_hub))
    assert rc != 0
    assert (f"models not found on the hub:\n  {UNKNOWN} (config key models.m0.name_or_path): "
            f"the hub has no such model") in out, out


def test_unchecked_ids_warn_a_dry_run_and_stop_a_real_run_before_any_job(tmp_path):
    configfile = write_config(tmp_path / "c.yaml", hub_config(KNOWN))
    line = f"  {KNOWN} (config key models.m0.name_or_path): could not reach the hub"
    env = env_with(tmp_path, HF_ENDPOINT=closed_port())
    rc, out = dry(tmp_path, configfile, env=env)
    assert rc == 0, out   # the dry run still shows the grid
    assert "WARNING: could not check that these models are on the hub" in out and line in out
    rc, out = snakemake("--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(configfile), env=env)
    assert rc != 0
    assert "could not check that these models are on the hub; nothing was run" in out, out
    assert line in out
    assert not (tmp_path / "results").exists()


def test_a_cached_model_passes_offline(tmp_path):
    """HF_HUB_OFFLINE=1 with the model in the local cache: no warning, and a real run starts
    (its first job, the data, runs)."""
    cfg = hub_config(KNOWN)
    configfile = write_config(tmp_path / "c.yaml", cfg)
    env = env_with(tmp_path, HF_HUB_OFFLINE="1")
    rc, out = dry(tmp_path, configfile, env=env)
    assert rc == 0 and f"{KNOWN} (config key models.m0.name_or_path): HF_HUB_OFFLINE" in out, out
    cache_model(tmp_path / "hub-cache", KNOWN)
    target = "results/micro/data/news/data.json"
    rc, out = snakemake(target, "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory",
                        str(tmp_path), "--configfile", str(configfile), env=env)
    assert rc == 0, out
    assert "could not check" not in out
    assert (tmp_path / target).is_file()
