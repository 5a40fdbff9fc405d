"""`specc tune`: real studies on Optuna, with real runs on MNIST, real SQLite and PostgreSQL storage, real
processes killed and interrupted. Nothing is mocked; the runs train on a few hundred examples to stay quick."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import specc
from specc.core.errors import SpecError, UsageError

SPEC = """\
# a small MLP, tuned
language: 2

let width = choice(16, 32)  # the layer's width

model mlp {
  input pixels: (784,)
  dense(width, activation=choice(relu, tanh))
  dense(10, activation=softmax)
}

data {
  dataset: mnist
  flatten: true
  scale: 1 / 255
}

train {
  loss: sparse_categorical_crossentropy
  optimizer: adam(learning_rate=loguniform(1e-3, 1e-2))
  metrics: [accuracy]
  epochs: 2
  batch_size: 64
  validation_split: 0.2
  seed: 1
}

tune {
  trials: TRIALS
  objective: val_accuracy
  sampler: random
  seed: 3
}
"""

LIMIT = "600"


def write_spec(folder: Path, trials: int = 3, text: str = SPEC) -> Path:
    path = folder / "tuned.model"
    path.write_text(text.replace("TRIALS", str(trials)))
    return path


def specc_cli(*args, cwd, timeout=600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "specc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def trials_table(study_dir: Path) -> list[dict]:
    with open(study_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_study_writes_runs_a_table_the_best_spec_its_model_and_plots_and_continues(data_dir, tmp_path, capsys):
    path = write_spec(tmp_path, trials=3)
    result = specc.load(path).tune(out=tmp_path / "study", limit=int(LIMIT))
    study = tmp_path / "study"
    rows = trials_table(study)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    for r in rows:  # every trial a real run directory, its spec the values it ran with
        run = study / r["run_dir"]
        assert r["run_dir"] == f"trials/{int(r['number']):04d}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert float(r["objective"]) == pytest.approx(metrics["validation"]["accuracy"])
        spec = (run / "spec.model").read_text()
        assert f"let width = {r['width']}  # the layer's width" in spec and "choice(" not in spec
        assert (run / "history.csv").is_file() and (run / "model.keras").is_file()
    best = max(rows, key=lambda r: float(r["objective"]))
    assert result.best_trial == int(best["number"]) and result.best_value == pytest.approx(float(best["objective"]))
    assert result.best_values["width"] == best["width"]
    # best.model: the spec with the best values, comments kept, clean for `specc check`, and diff shows exactly them
    text = (study / "best.model").read_text()
    assert text == result.best_spec and "# a small MLP, tuned" in text and "loguniform" not in text
    from specc.tools.diff import diff_plans

    best_plan = specc.load(study / "best.model").plan  # `specc check` clean: no error
    diff = diff_plans(specc.load(path).plan, best_plan)  # `specc diff`: the chosen values, and nothing else
    assert {c.name: c.new for c in diff.space} == result.best_values and not diff.inputs and diff.outputs is None
    keras = pytest.importorskip("keras")
    assert keras.models.load_model(study / "best.keras").get_layer("dense").units == int(best["width"])
    for plot in ("history.png", "importances.png", "slice.png", "parallel.png"):
        assert (study / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    info = json.loads((study / "study.json").read_text())
    assert info["best_trial"] == result.best_trial and info["storage"].startswith("sqlite:///")
    # Again, with more trials: the study goes on, its finished trials kept.
    capsys.readouterr()
    specc.load(path).tune(out=study, trials=4, limit=int(LIMIT), verbose=1)
    again = trials_table(study)
    assert [r["number"] for r in again] == ["0", "1", "2", "3"] and again[:3] == rows
    said = capsys.readouterr().out
    assert "trial 3: width=" in said and "trial 3: val_accuracy" in said and "0 trials left" in said


@pytest.mark.slow  # issue 16: in the documented slow set (the suite's 20-minute budget)
def test_pruned_trials_stop_early_and_failed_trials_are_recorded_and_the_study_goes_on(data_dir, tmp_path):
    # A learning rate of 1e-7 learns nothing: once three trials are finished, such a trial is below their median
    # after its second epoch and is pruned. A learning rate of 1e30 overflows the weights (NaN): the trial fails
    # with specc's reason, and the study goes on.
    text = (SPEC.replace("loguniform(1e-3, 1e-2)", "choice(0.003, 1e-7, 1e30)").replace("epochs: 2", "epochs: 3")
            .replace("sampler: random", "sampler: grid").replace("optimizer: adam", "optimizer: sgd"))
    path = write_spec(tmp_path, trials=8, text=text.replace("choice(16, 32)", "choice(16, 32, 48)"))
    out = specc_cli("tune", str(path), "--out", "study", "--limit", LIMIT, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = trials_table(tmp_path / "study")
    assert len(rows) == 8
    by_state = {s: [r for r in rows if r["state"] == s] for s in ("COMPLETE", "PRUNED", "FAIL")}
    assert by_state["FAIL"] and by_state["PRUNED"], out.stdout
    assert {r["number"] for r in by_state["FAIL"]} == {r["number"] for r in rows if r["sgd.learning_rate"] == "1e30"}
    assert all("not finite" in r["error"] or "NaN" in r["error"] for r in by_state["FAIL"]), by_state["FAIL"]
    for r in by_state["PRUNED"]:
        assert r["sgd.learning_rate"] == "1e-7" and int(r["pruned_at"]) < 3
        assert int(r["epochs"]) == int(r["pruned_at"])
        assert json.loads((tmp_path / "study" / r["run_dir"] / "metrics.json").read_text())["epochs"] == int(r["pruned_at"])
    assert "pruned after epoch" in out.stdout and "the study goes on" in out.stdout


@pytest.mark.slow  # issue 16: in the documented slow set (the suite's 20-minute budget)
def test_two_workers_share_one_sqlite_study_and_never_run_a_trial_twice(data_dir, tmp_path):
    path = write_spec(tmp_path, trials=4, text=SPEC.replace("trials: TRIALS", "trials: TRIALS\n  workers: 2\n  pruner: none"))
    out = specc_cli("tune", str(path), "--out", "study", "--limit", LIMIT, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = trials_table(tmp_path / "study")
    numbers = [int(r["number"]) for r in rows if r["state"] == "COMPLETE"]
    assert len(numbers) >= 4 and len(set(numbers)) == len(numbers)
    assert len({r["run_dir"] for r in rows}) == len(rows)


def test_workers_on_postgresql_share_the_study(data_dir, tmp_path, postgres_url):
    path = write_spec(tmp_path, trials=3)
    # The storage's tables are made once before the workers start (two processes making them at once race).
    import optuna

    optuna.storages.RDBStorage(postgres_url)
    args = ["tune", str(path), "--storage", postgres_url, "--study", "pg-study", "--limit", LIMIT]
    workers = [subprocess.Popen([sys.executable, "-m", "specc", *args, "--out", f"machine{i}"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1] for o in outs]
    assert all("best: trial" in out and "wrote machine" in out for out, _ in outs), outs  # the command's report
    study = optuna.load_study(study_name="pg-study", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers) >= 3
    # Each process's table lists every trial; its own run directories are inside its study directory.
    mine = [{int(r["number"]) for r in trials_table(tmp_path / f"machine{i}") if r["run_dir"].startswith("trials/")}
            for i in range(2)]
    assert mine[0] and mine[1] and not mine[0] & mine[1]  # both worked, never on the same trial
    assert "password" not in (tmp_path / "machine0" / "study.json").read_text()


@pytest.mark.slow  # issue 16: in the documented slow set (the suite's 20-minute budget)
def test_a_killed_worker_s_trial_is_failed_by_its_heartbeat_and_retried_and_ctrl_c_stops_cleanly(data_dir, tmp_path):
    path = write_spec(tmp_path, trials=3, text=SPEC.replace("epochs: 2", "epochs: 30"))
    args = [sys.executable, "-m", "specc", "tune", str(path), "--out", "study", "--heartbeat", "1", "--limit", LIMIT]
    victim = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = tmp_path / "study" / "trials" / "0000" / "history.csv"
    deadline = time.monotonic() + 300
    while not started.exists() and time.monotonic() < deadline:  # in its first epochs
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # The next process finds trial 0 silent for more than twice the heartbeat: failed, and its values run again.
    survivor = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    retried = tmp_path / "study" / "trials" / "0002" / "history.csv"
    while not retried.exists() and time.monotonic() < deadline and survivor.poll() is None:
        time.sleep(0.2)
    os.killpg(survivor.pid, signal.SIGINT)  # Ctrl-C in the third trial
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 130, err
    assert "continue with `specc tune" in err
    import optuna

    study = optuna.load_study(study_name="tuned", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    t = study.trials
    assert t[0].state.name == "FAIL" and t[1].params == t[0].params  # retried once with the same values
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    assert t[1].state.name == "COMPLETE" and retry.retried_trial_number(t[1]) == 0
    assert len({x.number for x in t}) == len(t)
    rows = trials_table(tmp_path / "study")  # written at Ctrl-C
    assert rows[1]["state"] == "COMPLETE"


def test_mistakes_are_said_before_any_trial(data_dir, tmp_path):
    plain = tmp_path / "plain.model"
    plain.write_text(SPEC.replace("choice(16, 32)", "16").replace("choice(relu, tanh)", "relu")
                     .replace("loguniform(1e-3, 1e-2)", "1e-3").replace("TRIALS", "2"))
    with pytest.raises(SpecError, match="nothing to tune"):
        specc.load(plain).tune(out=tmp_path / "s1")
    grid = write_spec(tmp_path, text=SPEC.replace("sampler: random", "sampler: grid"))
    with pytest.raises(SpecError) as err:
        specc.load(grid).tune(out=tmp_path / "s2")
    assert "`adam.learning_rate` is a range" in err.value.message and err.value.line == 31
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a study's"):
        specc.load(write_spec(tmp_path)).tune(out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="`%40`") as err:
        specc.load(write_spec(tmp_path)).tune(out=tmp_path / "s3", storage="postgresql://nobody:p@ss@127.0.0.1:1/none")
    assert "ss@" not in err.value.render() and not (tmp_path / "s3").exists()
    out = specc_cli("tune", str(write_spec(tmp_path)), "--storage", "postgresql://nobody:secret@127.0.0.1:1/none",
                    "--out", "s3", cwd=tmp_path)
    assert out.returncode == 2 and "cannot open the study's storage" in out.stderr and "Traceback" not in out.stderr
    assert "secret" not in out.stderr and not (tmp_path / "s3").exists()  # no password shown, nothing left behind
    for bad, said in (({"storage": ""}, "database URL"), ({"study": "../x y"}, "a study's name"),
                      ({"sampler": "tpee"}, "`sampler` is one of"), ({"trials": 0}, ">= 1")):
        with pytest.raises(UsageError, match=said):
            specc.load(write_spec(tmp_path)).tune(out=tmp_path / "s4", **bad)


def test_a_study_folder_is_only_ever_continued_by_its_own_spec(tmp_path):
    from specc.tools.tune import _identity, settings_of

    path = write_spec(tmp_path)
    plan = specc.load(path).plan
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text(json.dumps({**_identity(plan, settings_of(plan)), "storage": "sqlite:///x"}))
    (tmp_path / "b").mkdir()
    changed = specc.load(write_spec(tmp_path / "b", text=SPEC.replace("epochs: 2", "epochs: 3")))
    with pytest.raises(UsageError, match="the spec changed besides its spaces"):
        changed.tune(out=study)
    with pytest.raises(UsageError, match="is kept in sqlite:///x"):
        specc.load(path).tune(out=study, storage="sqlite:////tmp/elsewhere.db")
    (study / "study.json").write_text("{not json")
    with pytest.raises(specc.DataError, match="not valid JSON"):
        specc.load(path).tune(out=study)
    assert sorted(p.name for p in study.iterdir()) == ["study.json"]


def test_trials_csv_columns_of_spaces_never_take_the_table_s_own():
    from specc.tools.study_report import FIXED_COLUMNS, column

    assert column("epochs") == "space epochs" and column("number") == "space number" and column("width") == "width"
    assert all(column(c) not in FIXED_COLUMNS for c in FIXED_COLUMNS)
