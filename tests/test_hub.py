"""`push_to_hub`, `hub_strategy` and the model card, checked against transformers.Trainer's calls into
huggingface_hub on the same job.

The Hub is stood in for twice, and nothing reaches the network:

* `HubRecorder`: `HfApi.create_repo` and `HfApi.upload_folder` are patched (on the class, so transformers' shared
  client and hf_lightning's are both caught) to record each call with the files it would upload (name and SHA-256,
  after its ignore patterns) and to answer as the Hub does;
* `LocalHub`: an HTTP server on the loopback serving the Hub endpoints an upload uses (repo creation, README
  validation, pre-upload, commit), so huggingface_hub's real client code runs end to end.

The offline and unreachable cases go through huggingface_hub's real HTTP client, to a closed loopback port or with its
offline switch on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ToyClassification, free_port, make_args, run_gloo_ranks, run_job, tiny_bert, trainer_classes
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_api as hf_api_module
from huggingface_hub.utils import filter_repo_objects
from packaging.version import Version
from transformers import trainer as transformers_trainer
from transformers.utils import hub as transformers_hub

from hf_lightning import compat
from hf_lightning.hub import HubRepoError

# Files whose bytes legitimately differ between the two trainers: the pickled arguments' class, wall-clock times in
# the state, the optimizer's state (equal tensors and groups, pickled in another order).
DIFFERENT_BYTES = {"training_args.bin", "trainer_state.json", "optimizer.pt"}
HUB_ARGS = dict(push_to_hub=True, hub_model_id="me/tiny", hub_token="hf_stand_in")
SAVES = dict(save_strategy="steps", save_steps=4, n_eval=8, eval_strategy="steps", eval_steps=4, num_train_epochs=2)

# transformers pushes through its shared client (`transformers.utils.hub.hf_api()`) from 5.10; before, through
# huggingface_hub's module-level functions, which this stand-in does not fully redirect (uploads and endpoints)
_BACKGROUND_PUSHES = pytest.mark.skipif(
    compat.TRANSFORMERS_VERSION < Version("5.10.0"), reason="transformers < 5.10 pushes without its shared Hub client"
)


class HubRecorder:
    """The Hub's side of `create_repo` / `upload_folder`, recording every call (see the module docstring)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def create_repo(self, api: HfApi, repo_id: str, *, token: Any = None, private: Any = None, **kw: Any) -> RepoUrl:
        self.calls.append({"call": "create_repo", "repo_id": repo_id, "token": token, "private": private, **kw})
        full_id = repo_id if "/" in repo_id else f"stand-in-user/{repo_id}"  # the Hub puts it under the token's user
        return RepoUrl(f"{api.endpoint}/{full_id}", endpoint=api.endpoint)

    def upload_folder(self, api: HfApi, *, repo_id: str, folder_path: str, run_as_future: bool = False, **kw: Any):
        root = Path(folder_path)
        paths = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        files = {
            path: hashlib.sha256((root / path).read_bytes()).hexdigest()
            for path in filter_repo_objects(paths, ignore_patterns=kw.get("ignore_patterns"))
        }
        call = {"call": "upload_folder", "repo_id": repo_id, "folder_path": folder_path, **kw}
        call["files"] = files
        call["future"] = run_as_future
        self.calls.append(call)
        n = len(self.calls)
        info = CommitInfo(f"{api.endpoint}/{repo_id}/commit/{n:040x}", kw.get("commit_message"), "", f"{n:040x}")
        if not run_as_future:
            return info
        done: Future = Future()
        done.set_result(info)
        return done


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> HubRecorder:
    recorder = HubRecorder()
    monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **kw: recorder.create_repo(api, *a, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, *a, **kw: recorder.upload_folder(api, *a, **kw))
    # transformers before its shared client (`hf_api()`) imported huggingface_hub's module-level functions, bound to
    # huggingface_hub's own client at import
    for name in ("create_repo", "upload_folder"):
        if hasattr(transformers_trainer, name):
            monkeypatch.setattr(transformers_trainer, name, getattr(HfApi(), name))
    return recorder


def _comparable(calls: list[dict], root: str) -> list[dict]:
    """The calls with `output_dir`-relative paths and the bytes of `DIFFERENT_BYTES` files left out."""
    out = []
    for call in calls:
        call = {k: (v.replace(root, "<out>") if isinstance(v, str) else v) for k, v in call.items()}
        if "files" in call:
            call["files"] = {
                path: (None if os.path.basename(path) in DIFFERENT_BYTES else digest)
                for path, digest in call["files"].items()
            }
        out.append(call)
    return out


def _push_job(impl: str, out: Path, hub: HubRecorder, **overrides: Any) -> tuple[Any, list[dict]]:
    hub.calls.clear()
    trainer = run_job(impl, str(out), **{**SAVES, **HUB_ARGS, **overrides})
    trainer.push_to_hub()
    return trainer, _comparable(list(hub.calls), str(out))


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints", "end"])
def test_hub_strategy_makes_transformers_calls_with_the_same_files(strategy: str, hub: HubRecorder, tmp_path) -> None:
    _, theirs = _push_job("hf", tmp_path / "hf", hub, hub_strategy=strategy)
    _, ours = _push_job("hfl", tmp_path / "hfl", hub, hub_strategy=strategy)
    assert ours == theirs
    commits = [c["commit_message"] for c in ours if c["call"] == "upload_folder"]
    per_save = {"every_save": 1, "checkpoint": 2, "all_checkpoints": 2, "end": 0}[strategy]
    assert len(commits) == 3 * per_save + 1  # saves at steps 4, 8, 10, then push_to_hub()
    assert commits[-1] == "End of training"
    assert ours[0] == {"call": "create_repo", "repo_id": "me/tiny", "token": "hf_stand_in", "private": None,
                       "exist_ok": True}  # fmt: skip
    final = ours[-1]["files"]
    assert {"model.safetensors", "config.json", "training_args.bin", "README.md"} <= set(final)
    assert not any(path.startswith(("checkpoint-", "tmp-")) for path in final)
    if strategy == "checkpoint":
        assert {c.get("path_in_repo") for c in ours if c["call"] == "upload_folder"} == {None, "last-checkpoint"}
    if strategy == "all_checkpoints":
        in_repo = [c["path_in_repo"] for c in ours if c.get("path_in_repo")]
        assert in_repo == ["checkpoint-4", "checkpoint-8", "checkpoint-10"]


def test_model_card_and_user_saves_match_transformers(hub: HubRecorder, tmp_path) -> None:
    cards, calls = {}, {}
    for impl in ("hf", "hfl"):
        out = tmp_path / impl
        trainer, _ = _push_job(impl, out, hub, hub_strategy="end", hub_revision="dev", hub_private_repo=True)
        hub.calls.clear()
        trainer.save_model()  # a user's save is pushed ("Model save")
        future = trainer.push_to_hub("Final", blocking=False, model_name="tiny-bert", language="en", tags="demo")
        assert isinstance(future, Future) and future.result().oid
        calls[impl] = _comparable(hub.calls, str(out))
        cards[impl] = (out / "README.md").read_text()
    assert calls["hfl"] == calls["hf"]
    assert [(c["commit_message"], c["revision"]) for c in calls["hfl"]] == [("Model save", "dev"), ("Final", "dev")]
    assert cards["hfl"] == cards["hf"]
    card = cards["hfl"]
    assert "## Training results" in card and "| Validation Loss |" in card and "- demo" in card
    assert "# tiny-bert" in card and "language:\n- en" in card and "- num_epochs: 2" in card


@pytest.mark.skipif(
    compat.TRANSFORMERS_VERSION < Version("5.23.0"), reason="transformers' push_to_hub(private=) is 5.23's"
)
def test_push_to_hub_without_push_to_hub_argument_creates_the_repo_then(hub: HubRecorder, tmp_path) -> None:
    calls = {}
    for impl in ("hf", "hfl"):
        hub.calls.clear()
        trainer = run_job(impl, str(tmp_path / impl / "my-model"), hub_token="hf_stand_in", max_steps=2)
        assert trainer.hub_model_id is None and hub.calls == []
        trainer.push_to_hub(private=True)
        assert trainer.hub_model_id == "stand-in-user/my-model"
        calls[impl] = _comparable(hub.calls, str(tmp_path / impl / "my-model"))
    assert calls["hfl"] == calls["hf"]
    assert calls["hfl"][0]["private"] is True


@_BACKGROUND_PUSHES
def test_a_save_while_uploading_is_skipped_unless_hub_always_push(hub: HubRecorder, tmp_path, monkeypatch) -> None:
    """HF skips a checkpoint's push while the previous one still uploads; `hub_always_push` pushes every one."""
    record = HfApi.upload_folder  # the stand-in's, patched by the fixture

    def still_uploading(api: HfApi, *a: Any, **kw: Any) -> Future:
        record(api, *a, **kw)
        return Future()  # a background upload that has not finished

    monkeypatch.setattr(HfApi, "upload_folder", still_uploading)
    counts = {}
    for always in (False, True):
        for impl in ("hf", "hfl"):
            hub.calls.clear()
            Trainer, _ = trainer_classes(impl)
            args = make_args(impl, str(tmp_path / f"{impl}{always}"), **HUB_ARGS, hub_always_push=always,
                             save_strategy="steps", save_steps=2, max_steps=6)  # fmt: skip
            trainer = Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(24, seed=1))
            trainer._finish_current_push = lambda: None  # the stand-in's uploads never finish
            trainer.train()
            counts[(impl, always)] = sum(c["call"] == "upload_folder" for c in hub.calls)
    assert counts[("hfl", False)] == counts[("hf", False)] == 1  # the saves at steps 4 and 6 are not pushed
    assert counts[("hfl", True)] == counts[("hf", True)] == 3


# ---- over HTTP: a local Hub ------------------------------------------------------------------------------------


REFUSED_TOKEN = "hf_refused"  # the local Hub answers 401 to it


class LocalHub(ThreadingHTTPServer):
    """The Hub endpoints an upload calls, on the loopback: `repos` holds each repo's files, `commits` each commit's
    (repo, revision, message, paths); every file is taken inline ("regular" upload mode, no LFS)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LocalHubHandler)
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: list[tuple[str, str, str, list[str]]] = []
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"


class _LocalHubHandler(BaseHTTPRequestHandler):
    server: LocalHub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(404, {"error": f"not served by the stand-in: {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        hub, path = self.server, self.path.split("?")[0]
        parts = path.strip("/").split("/")  # api / models / {owner} / {name} / (preupload | commit) / {revision}
        if path == "/api/repos/create" and self.headers.get("Authorization") == f"Bearer {REFUSED_TOKEN}":
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
        elif path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request['organization'] or 'stand-in-user'}/{request['name']}"
            hub.repos.setdefault(repo_id, {})
            self._reply(200, {"url": f"{hub.endpoint}/{repo_id}"})
        elif path == "/api/validate-yaml":
            self._reply(200, {"warnings": [], "errors": []})
        elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            self._reply(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo_id, revision = f"{parts[2]}/{parts[3]}", parts[5]
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            added = [line["value"] for line in lines if line["key"] == "file"]
            for f in added:
                hub.repos[repo_id][f["path"]] = base64.b64decode(f["content"])
            hub.commits.append((repo_id, revision, header["summary"], sorted(f["path"] for f in added)))
            oid = f"{len(hub.commits):040x}"
            self._reply(200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid})
        else:
            self._reply(404, {"error": f"not served by the stand-in: {path}"})


def _rebuild_transformers_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' shared Hub client, rebuilt on the patched endpoint (from transformers 5.x's `hf_api()`; older
    releases call huggingface_hub's module-level functions, pointed at the stand-in by the fixture)."""
    monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)


@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    hub = LocalHub()
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(hub_constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(hub_constants, "HF_HUB_DISABLE_XET", True)  # plain HTTP commits (no Xet storage protocol)
    _rebuild_transformers_client(monkeypatch)
    monkeypatch.setattr(hf_api_module.api, "endpoint", hub.endpoint)  # huggingface_hub's module-level client
    yield hub
    hub.shutdown()
    hub.server_close()


def test_pushes_reach_a_local_hub_over_http(local_hub: LocalHub, tmp_path) -> None:
    """huggingface_hub's real client, over HTTP: the same commits and the same repo as transformers'."""
    for impl in ("hf", "hfl"):
        # hub_always_push: every save pushes, however long the previous upload takes (skipping depends on timing)
        hub_args = {
            **HUB_ARGS,
            "hub_model_id": f"me/tiny-{impl}",
            "hub_strategy": "checkpoint",
            "hub_always_push": True,
        }
        trainer = run_job(impl, str(tmp_path / impl), save_strategy="steps", save_steps=2, max_steps=4, **hub_args)
        trainer.push_to_hub()
    commits = {impl: [c[1:] for c in local_hub.commits if c[0] == f"me/tiny-{impl}"] for impl in ("hf", "hfl")}
    assert commits["hfl"] == commits["hf"]
    assert [c[1] for c in commits["hfl"]] == [
        "Training in progress, step 2",
        "Training in progress, step 2, checkpoint",
        "Training in progress, step 4",
        "Training in progress, step 4, checkpoint",
        "End of training",
    ]
    ours, theirs = local_hub.repos["me/tiny-hfl"], local_hub.repos["me/tiny-hf"]
    assert sorted(ours) == sorted(theirs)
    assert {"README.md", "model.safetensors", "last-checkpoint/model.safetensors"} <= set(ours)
    ours["README.md"] = ours["README.md"].replace(b"tiny-hfl", b"tiny-hf")  # the card is named after the repo
    for path in ("model.safetensors", "config.json", "README.md", "last-checkpoint/model.safetensors"):
        assert ours[path] == theirs[path], path


# ---- no Hub: fail before training ---------------------------------------------------------------------------


@pytest.mark.parametrize("cause", ["offline", pytest.param("unreachable", marks=_BACKGROUND_PUSHES), "refused"])
def test_push_to_hub_without_a_hub_fails_before_training(cause: str, tmp_path, monkeypatch, request) -> None:
    hub_args = dict(HUB_ARGS)
    _rebuild_transformers_client(monkeypatch)
    if cause == "offline":
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        expected = "HF_HUB_OFFLINE"
    elif cause == "unreachable":  # a closed port on this machine: the connection is refused at once
        monkeypatch.setattr(hub_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
        expected = "cannot be reached"
    else:  # the Hub refuses the token
        request.getfixturevalue("local_hub")
        hub_args["hub_token"] = REFUSED_TOKEN
        expected = "`hub_token`.*401"
    Trainer, _ = trainer_classes("hfl")
    args = make_args("hfl", str(tmp_path / "out"), **hub_args)
    with pytest.raises(HubRepoError, match=rf"push_to_hub=True.*'me/tiny'.*{expected}"):
        Trainer(model=tiny_bert(), args=args, train_dataset=ToyClassification(8))
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    HfTrainer, _ = trainer_classes("hf")  # transformers stops in its constructor too
    with pytest.raises(Exception, match="(?i)offline mode|connection refused|401"):
        HfTrainer(model=tiny_bert(), args=make_args("hf", str(tmp_path / "hf"), **hub_args))


def test_plain_lightning_path_refuses_push_to_hub(tmp_path) -> None:
    from hf_lightning import HFLightningModule

    with pytest.raises(ValueError, match="push_to_hub=True"):
        HFLightningModule.from_args(tiny_bert(), make_args("hfl", str(tmp_path), **HUB_ARGS))


# ---- several processes: only rank 0 talks to the Hub -----------------------------------------------------------


def _rank_pushes(rank: int, out: str) -> dict:
    """One of 2 gloo ranks training with checkpoints pushed, then `push_to_hub()`; returns its Hub calls."""
    recorder = HubRecorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HfApi, "create_repo", lambda api, *a, **kw: recorder.create_repo(api, *a, **kw))
        mp.setattr(HfApi, "upload_folder", lambda api, *a, **kw: recorder.upload_folder(api, *a, **kw))
        trainer = run_job("hfl", out, strategy="ddp", devices=2, ddp_backend="gloo", save_strategy="steps",
                          save_steps=2, max_steps=4, **HUB_ARGS)  # fmt: skip
        trainer.push_to_hub()
    return {"calls": [c["call"] for c in recorder.calls], "hub_model_id": trainer.hub_model_id}


def test_only_rank_zero_pushes(tmp_path) -> None:
    ranks = run_gloo_ranks(_rank_pushes, tmp_path, timeout=120)
    assert ranks[0] == {"calls": ["create_repo", "upload_folder", "upload_folder", "upload_folder"],
                        "hub_model_id": "me/tiny"}  # fmt: skip
    assert ranks[1] == {"calls": [], "hub_model_id": None}
