"""The training campaign: a run advanced in segments ends exactly where one uninterrupted run does, each segment
is recorded, a finished run leaves its result and weights, and bad manifests, changed recipes, damaged states
and a second process are refused in one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import resnets
from resnets import CheckpointError, ConfigError, ResnetsError
from resnets.engine.campaign import (Budget, CampaignLock, StopSignals, advance, check_state, load_manifest,
                                     note_pause, parse_budget, paused_seconds, progress, read_segments, running_pid,
                                     seconds_per_step, status, unfinished)
from resnets.engine.checkpoint import load_training_checkpoint, model_from_checkpoint
from resnets.models.profile import profile_model

BENCH = Path(__file__).resolve().parents[2] / "bench"
SETTINGS = {"epochs": 2, "batch_size": 64}


def _manifest(tmp_path, runs=None):
    runs = runs or [{"name": "r20", "recipe": "digits", "model": "resnet20", "seed": 3, "data": "digits",
                     "overrides": SETTINGS}]
    path = tmp_path / "campaign.yaml"
    path.write_text(json.dumps({"runs": runs}))  # JSON is YAML
    return path


def _segment(run, state, results, steps):
    return advance(run, state, Budget(time.monotonic() + 600, max_steps=steps), results)


def test_segments_end_where_an_uninterrupted_run_ends(tmp_path):
    (run,) = load_manifest(_manifest(tmp_path))
    state, results = tmp_path / "state", tmp_path / "results"
    assert progress(run, state) is None  # nothing trained yet
    first = _segment(run, state, results, 7)  # mid-epoch
    assert first["start_step"] == 0 and first["steps"] == 7 and first["total_steps"] == 38
    assert load_training_checkpoint(state / "r20" / "last.pt")["step"] == 7
    second = _segment(run, state, results, 30)  # over an epoch's end, into the next
    assert second["start_step"] == 7 and second["steps"] == 30
    assert [s["steps"] for s in read_segments(state, run)] == [7, 30]
    so_far = progress(run, state)  # the curves so far: one epoch ended
    assert (so_far["run"], so_far["model"], so_far["seed"], so_far["step"], so_far["total"]) == ("r20", "resnet20",
                                                                                              3, 37, 38)
    assert [h["step"] for h in so_far["history"]] == [19] and 0 <= so_far["history"][0]["train_error"] <= 100
    row = status([run], state, results)[0]
    assert row["eta_from"] == "this network" and row["eta_s"] >= 0
    assert row | {"seconds_by_kind": None, "eta_s": None, "eta_from": None} == {
        "run": "r20", "step": 37, "total": 38, "done": False, "seconds_by_kind": None, "eta_s": None, "eta_from": None,
        "last_epoch": {k: so_far["history"][0][k] for k in ("epoch", "train_error", "val_error")}}
    assert row["last_epoch"]["epoch"] == 1 and 0 <= row["last_epoch"]["val_error"] <= 100
    _segment(run, state, results, 100)
    assert not (state / "r20").exists() and list(unfinished([run], results)) == []
    result = json.loads((results / "r20.json").read_text())
    assert result["iterations"] == 38 and result["model"] == "resnet20" and result["seed"] == 3
    assert [s["steps"] for s in result["segments"]] == [7, 30, 1] and 0 <= result["final_train_error"] <= 100
    assert len(result["history"]) == 2 and result["segments"][0]["precision"] in ("bf16", "fp32")

    straight = resnets.train(resnets.make_config("digits", model="resnet20", seed=3, out=str(tmp_path / "straight"),
                                                 progress=False, tensorboard=False, **SETTINGS))
    model, ckpt = model_from_checkpoint(results / "r20.safetensors")
    want = load_training_checkpoint(straight.out_dir / "last.pt")["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    assert ckpt["test_top1"] == result["test_top1"] and ckpt["iterations"] == 38


def test_pauses_are_left_out_of_a_segments_time(tmp_path):
    import threading

    (run,) = load_manifest(_manifest(tmp_path, [{"name": "long", "recipe": "digits", "model": "resnet20",
                                                  "data": "digits", "overrides": {"epochs": 10, "batch_size": 64}}]))
    state, results = tmp_path / "state", tmp_path / "results"
    state.mkdir()
    note_pause(state, begins=False)  # an end without a beginning counts nothing
    assert paused_seconds(state) == 0.0
    out = {}
    start = time.perf_counter()
    worker = threading.Thread(target=lambda: out.update(seg=_segment(run, state, results, 80)))  # (seconds long)
    worker.start()
    time.sleep(0.2)
    note_pause(state, begins=True)  # what a benchmark notes around its SIGSTOP / SIGCONT
    time.sleep(1.5)
    note_pause(state, begins=False)
    worker.join()
    wall = time.perf_counter() - start
    assert 1.5 <= paused_seconds(state) < 2.5
    assert 0 < out["seg"]["seconds"] <= wall - 1.4  # the pause is not training time


def test_bad_manifests_are_refused_in_one_line(tmp_path):
    base = {"name": "a", "recipe": "digits", "model": "resnet20"}
    for entry, message in (({**base, "recipe": "nope"}, "unknown recipe 'nope'"),
                           ({**base, "model": "resnet7"}, "unknown model 'resnet7'"),
                           ({"name": "a", "recipe": "digits"}, "needs name, recipe and model"),
                           ({**base, "colour": 1}, "unknown keys"), ({**base, "name": "../x"}, "must be letters"),
                           ({**base, "overrides": {"lr": -1}}, "lr"),
                           ({**base, "data": "/data/{x"}, "is not a path with {NAME} placeholders"),
                           ({**base, "data": "/data/{0}"}, "is not a path with {NAME} placeholders")):
        with pytest.raises(ConfigError, match=message):
            load_manifest(_manifest(tmp_path, [entry]))
    with pytest.raises(ConfigError, match="names a run twice"):
        load_manifest(_manifest(tmp_path, [base, base]))
    (tmp_path / "bad.yaml").write_text("runs: [")
    with pytest.raises(ConfigError, match=r"manifest .*bad.yaml is not valid YAML: .* \(line 1, column 8\)$"):
        load_manifest(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read the campaign manifest .*: No such file or directory$"):
        load_manifest(tmp_path / "missing.yaml")


def test_the_repositorys_manifest_is_the_papers_schedule_for_every_run(tmp_path):
    """bench/campaign.yaml loads as the next machine will load it, and every run is 64,000 iterations of batch 128,
    the paper's whole depth column among them."""
    runs = load_manifest(BENCH / "campaign.yaml", {"cifar10_lossless": str(tmp_path / "cifar-10-python.tar.gz")})
    rows = status(runs, tmp_path / "state", tmp_path / "results")
    assert {row["total"] for row in rows} == {64000}
    assert {r.config(tmp_path).batch_size for r in runs} == {128}
    paper = {r.model for r in runs if r.recipe.endswith("-paper") and not r.overrides}  # on the 45k/5k split
    assert {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain56"} <= paper


def test_a_changed_recipe_or_a_damaged_state_is_refused(tmp_path):
    (run,) = load_manifest(_manifest(tmp_path))
    state, results = tmp_path / "state", tmp_path / "results"
    _segment(run, state, results, 3)
    (changed,) = load_manifest(_manifest(tmp_path, [{"name": "r20", "recipe": "digits", "model": "resnet20",
                                                     "seed": 3, "data": "digits",
                                                     "overrides": {**SETTINGS, "lr": 0.2}}]))
    with pytest.raises(ConfigError, match="made with lr=0.05, the manifest now says 0.2"):
        check_state(changed, state)
    last = state / "r20" / "last.pt"
    # a state made before a setting existed: it had that setting's default, and resumes
    ckpt = torch.load(last, weights_only=True)
    del ckpt["config"]["optimizer"]
    torch.save(ckpt, last)
    assert check_state(run, state) == last
    before = last.read_bytes()
    last.write_bytes(before[: len(before) // 2])
    with pytest.raises(CheckpointError):
        _segment(run, state, results, 3)
    assert last.read_bytes() == before[: len(before) // 2]  # nothing overwritten
    (state / "r20" / "segments.json").write_text("{")
    with pytest.raises(CheckpointError, match="damaged"):
        read_segments(state, run)


def test_one_campaign_per_state_folder(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "RUNNING").write_text(f"{child.pid}\n")
        assert running_pid(tmp_path) == child.pid
        with pytest.raises(ResnetsError, match=f"already runs on .* \\(process {child.pid}\\)"):
            CampaignLock(tmp_path).__enter__()
    finally:
        child.kill()
        child.wait()
    assert running_pid(tmp_path) is None  # a stale file is taken over
    with CampaignLock(tmp_path):
        assert running_pid(tmp_path) == os.getpid()
    assert not (tmp_path / "RUNNING").exists()


def test_budgets_and_signals():
    assert [parse_budget(t) for t in ("150m", "2h", "90s", "600", "1.5h")] == [9000, 7200, 90, 600, 5400]
    with pytest.raises(ConfigError, match="not a duration"):
        parse_budget("soon")
    with StopSignals() as signals:
        budget = Budget(time.monotonic() + 600, signals)
        assert not budget.over()
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.asked and budget.over()
    assert Budget(time.monotonic() - 1).over() and Budget(time.monotonic() + 60, max_steps=0).over()


@pytest.mark.slow
def test_sigterm_saves_the_state_and_exits(tmp_path):
    manifest = _manifest(tmp_path, [{"name": "r20", "recipe": "digits", "model": "resnet20",
                                     "overrides": {"epochs": 50, "batch_size": 64}}])  # the recipe's data
    state = tmp_path / "state"
    args = [sys.executable, str(BENCH / "campaign.py"), "--manifest", str(manifest), "--state", str(state),
            "--results", str(tmp_path / "results")]
    proc = subprocess.Popen([*args, "run", "--budget", "10m", "--nice", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not (state / "r20" / "segments.json").exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # the first epoch ended: the run is under way
    assert running_pid(state) == proc.pid
    time.sleep(1)
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and time.monotonic() - asked < 30, err
    record = json.loads(out.splitlines()[-1])
    assert load_training_checkpoint(state / "r20" / "last.pt")["step"] == record["start_step"] + record["steps"] > 0
    assert not (state / "RUNNING").exists()
    done = subprocess.run([*args, "status", "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout)[0]["step"] == record["steps"]
    bad = subprocess.run([*args, "run", "--budget", "soon"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "not a duration" in bad.stderr


def _parallel(tmp_path, *options):
    runs = [{"name": f"r20-s{seed}", "recipe": "digits", "model": "resnet20", "seed": seed, "data": "digits",
             "overrides": SETTINGS} for seed in (0, 1, 2)]
    done = subprocess.run([sys.executable, str(BENCH / "campaign.py"), "--manifest", str(_manifest(tmp_path, runs)),
                           "--state", str(tmp_path / "state"), "--results", str(tmp_path / "results"), "run",
                           "--parallel", "2", *options, "--device", "cpu", "--budget", "5m", "--nice", "0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "state" / "RUNNING").exists()
    return tmp_path / "state", tmp_path / "results"


@pytest.mark.slow
def test_parallel_runs_on_a_cpu_share_its_cores(tmp_path):
    state, _ = _parallel(tmp_path, "--max-steps", "3")
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for name in ("r20-s0", "r20-s1"):
        segment = json.loads((state / name / "segments.json").read_text())["segments"][-1]
        assert (segment["steps"], segment["threads"], segment["device"]) == (3, share, "cpu")
    assert not (state / "r20-s2").exists()  # the slots' runs did not finish: no slot was free for the third


@pytest.mark.slow
def test_a_slot_whose_run_finishes_takes_the_next_run(tmp_path):
    state, results = _parallel(tmp_path)
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    for name in ("r20-s0", "r20-s1", "r20-s2"):
        result = json.loads((results / f"{name}.json").read_text())
        assert result["iterations"] == 38 and [s["threads"] for s in result["segments"]] == [share]
    assert not any(state.glob("r20-*"))


def test_status_into_a_closed_pipe_ends_quietly(tmp_path):
    proc = subprocess.Popen([sys.executable, str(BENCH / "campaign.py"), "--manifest", str(_manifest(tmp_path)),
                             "--state", str(tmp_path / "state"), "--results", str(tmp_path / "results"), "status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `status | head -c 0`: the reader is gone before anything is printed
    assert proc.wait(timeout=120) == 141 and proc.stderr.read() == b""  # 128 + SIGPIPE, as `ls` ends: no traceback


def test_the_speed_here_pools_the_segments_that_ran_alike():
    def seg(kind, threads, steps, seconds):
        return {"kind": kind, "threads": threads, "steps": steps, "seconds": seconds}

    segments = [seg("avx512_core_amx", 1, 6000, 3600.0),  # beside another run: 0.6 s a step
                seg("avx2", 2, 1000, 2000.0),  # another kind of machine
                seg("avx512_core_amx", 2, 2000, 600.0),  # alone: 0.3 s a step
                seg("avx512_core_amx", 2, 0, 30.0),  # stopped while compiling: no step
                seg("avx512_core_amx", 2, 500, 650.0)]  # slowed by other work: 1.3 s a step
    assert seconds_per_step(segments, "avx512_core_amx") == pytest.approx(1250 / 2500)
    assert seconds_per_step(segments, "avx2") == 2.0
    assert seconds_per_step(segments, "avx512_core_bf16") is None
    eager = {**seg("avx512_core_amx", 2, 1000, 900.0), "compiled": False}
    compiled = {**seg("avx512_core_amx", 2, 1000, 300.0), "compiled": True}
    assert seconds_per_step([eager, compiled], "avx512_core_amx") == 0.3  # as the last one ran: compiled
    assert seconds_per_step([compiled, eager], "avx512_core_amx") == 0.9


def test_a_run_slowed_by_other_work_is_timed_by_its_network_pooled(tmp_path):
    """A run whose only segment here crawled beside other work: the estimate pools it with the long segments of
    the other runs of its network, instead of extrapolating its own slow start."""
    runs = [{"name": n, "recipe": "digits", "model": "resnet20", "seed": s, "data": "digits", "overrides": SETTINGS}
            for n, s in (("s0", 0), ("s1", 1))]
    manifest = load_manifest(_manifest(tmp_path, runs))
    state, results = tmp_path / "state", tmp_path / "results"
    own = _segment(manifest[1], state, results, 5)
    slow = {**own, "seconds": 10.0}  # 2 s a step: the machine was busy with something else
    (state / "s1" / "segments.json").write_text(json.dumps({"format": "resnets-campaign-v1", "run": "s1",
                                                            "segments": [slow]}))
    done = {**own, "steps": 1000, "seconds": 100.0}  # the network's other run: 0.1 s a step, alone
    results.mkdir(exist_ok=True)
    (results / "s0.json").write_text(json.dumps({"iterations": 38, "test_top1": 91.0, "model": "resnet20",
                                                 "seconds_by_kind": {own["kind"]: 100.0}, "segments": [done]}))
    row = status(manifest, state, results)[1]
    assert row["step"] == 5 and row["total"] == 38 and row["eta_from"] == "this network"
    assert row["eta_s"] == round(110 / 1005 * 33)  # pooled, about 0.11 s a step: not its own 2 s (66 s)


def test_a_run_not_yet_started_gets_its_time_left_from_other_runs_of_its_network(tmp_path):
    from resnets.machine import cpu_isa

    kind = cpu_isa() or "cpu"
    runs = [{"name": n, "recipe": "cifar10-resnet20-paper", "model": m, "seed": 0, "data": "cifar10"}
            for n, m in (("a20", "resnet20"), ("b20", "resnet20"), ("c56", "resnet56"))]
    manifest = load_manifest(_manifest(tmp_path, runs))
    results = tmp_path / "results"
    results.mkdir()
    segment = {"kind": kind, "threads": 2, "start_step": 0, "steps": 1000, "seconds": 250.0, "total_steps": 64000}
    (results / "a20.json").write_text(json.dumps({"iterations": 64000, "test_top1": 91.0, "model": "resnet20",
                                                  "seconds_by_kind": {kind: 16000.0}, "segments": [segment]}))
    rows = {r["run"]: r for r in status(manifest, tmp_path / "state", results)}
    assert rows["a20"]["done"] and rows["a20"]["eta_s"] == 0
    assert rows["b20"]["total"] == 64000 and rows["b20"]["eta_s"] == 16000  # 0.25 s a step, from a20
    assert rows["b20"]["eta_from"] == "other runs"
    # no ResNet-56 has run here: ResNet-20's speed, scaled by the two networks' multiply-accumulates
    macs20, macs56 = (sum(row.macs for row in profile_model(resnets.create_model(m, num_classes=10), 32))
                      for m in ("resnet20", "resnet56"))
    assert rows["c56"]["eta_from"] == "other networks" and macs56 > 3 * macs20
    assert rows["c56"]["eta_s"] == round(0.25 * macs56 / macs20 * 64000)
    assert status(manifest, tmp_path / "state", tmp_path / "nothing")[2]["eta_s"] is None  # no network ran here
    cli = subprocess.run([sys.executable, "-m", "resnets", "campaign", "status", str(tmp_path / "campaign.yaml"),
                          "--state", str(tmp_path / "state"), "--results", str(results)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    c56 = f"{rows['c56']['eta_s'] / 3600:.1f} h here**"
    assert "4.4 h here*" in cli.stdout and c56 in cli.stdout and cli.stdout.rstrip().endswith("\n".join((
        f"left: 2 run(s), {(16000 + rows['c56']['eta_s']) / 3600:.1f} h here",
        "* at the speed of the manifest's other runs of the same network on this kind of machine",
        "** from the speeds of the networks that ran on this kind of machine and the multiply-accumulates of each "
        "(a rough guide)")))


def test_a_network_that_never_ran_here_is_timed_on_the_line_through_those_that_did(tmp_path):
    """A fixed cost a step and a cost per multiply-accumulate, fitted to the networks that ran: ResNet-32 lies
    between ResNet-20 and ResNet-56 on that line, where scaling one network by the counts would not put it."""
    from resnets.machine import cpu_isa

    kind = cpu_isa() or "cpu"
    runs = [{"name": m, "recipe": "cifar10-resnet20-paper", "model": m, "seed": 0, "data": "cifar10"}
            for m in ("resnet20", "resnet56", "resnet32")]
    manifest = load_manifest(_manifest(tmp_path, runs))
    results = tmp_path / "results"
    results.mkdir()
    for name, seconds in (("resnet20", 100.0), ("resnet56", 200.0)):  # 0.1 and 0.2 s a step
        segment = {"kind": kind, "threads": 2, "start_step": 0, "steps": 1000, "seconds": seconds, "total_steps": 64000}
        (results / f"{name}.json").write_text(json.dumps({"iterations": 64000, "test_top1": 91.0, "model": name,
                                                          "seconds_by_kind": {kind: seconds}, "segments": [segment]}))
    macs = {m: sum(row.macs for row in profile_model(resnets.create_model(m, num_classes=10), 32))
            for m in ("resnet20", "resnet32", "resnet56")}
    rows = {r["run"]: r for r in status(manifest, tmp_path / "state", results)}
    along = (macs["resnet32"] - macs["resnet20"]) / (macs["resnet56"] - macs["resnet20"])
    assert rows["resnet32"]["eta_from"] == "other networks"
    assert rows["resnet32"]["eta_s"] == pytest.approx((0.1 + 0.1 * along) * 64000, abs=1)
