"""The `tune` section (`specc.compile.section_tune`): its settings checked into a `TunePlan`, its defaults, every
mistake a located error, and the objective's names checked against the names Keras really logs."""

import numpy as np
import pytest

import specc
from specc.compile.section_tune import default_objective, direction_of, logged_values
from specc.core.plan import Obj, TrainPlan, TunePlan
from specc.tools.diff import diff_settings

HEAD = "model m {\n  input x: (4,)\n  dense(3, activation=softmax)\n}\n"  # lines 1-4
TRAIN = "  loss: sparse_categorical_crossentropy\n  metrics: [accuracy]\n  validation_split: 0.1"
TUNE_LINE = 11  # the first line inside `tune { ... }` after HEAD and a three-line TRAIN


def spec(tune: str | None, train: str = TRAIN, head: str = HEAD) -> str:
    text = head + "train {\n" + train + "\n}\n"
    return text if tune is None else text + "tune {\n" + tune + "\n}\n"


def tune_of(tune: str | None, train: str = TRAIN, head: str = HEAD) -> TunePlan | None:
    return specc.loads(spec(tune, train, head)).plan.tune


def errors(text: str) -> list[tuple[int, int, str, str | None]]:
    with pytest.raises(specc.UserError) as info:
        specc.loads(text)
    return [(d.span.line, d.span.col, d.message, d.hint) for d in info.value.diagnostics]


def train_of(metrics: str, head: str = HEAD) -> TrainPlan:
    plan = specc.loads(spec(None, f"  loss: mse\n  metrics: {metrics}", head)).plan
    assert plan.train is not None
    return plan.train


# -- a valid section -----------------------------------------------------------------------------------------------


def test_no_tune_section_no_plan():
    assert tune_of(None) is None


def test_an_empty_section_takes_every_default():
    tune = tune_of("")
    assert tune is not None
    assert tune.model_dump() == {"trials": 20, "timeout": None, "objective": "val_accuracy", "direction": "maximize",
                                 "sampler": "tpe", "pruner": "median", "workers": 1, "storage": None, "study": None,
                                 "seed": None}
    assert tune.origins == {}


def test_every_setting_written():
    tune = tune_of('  trials: 50\n  timeout: "30m"\n  objective: val_loss\n  direction: maximize\n'
                   '  sampler: random\n  pruner: hyperband\n  workers: 4\n'
                   '  storage: "postgresql://user@host/db"\n  study: "mnist-width"\n  seed: 7')
    assert tune.model_dump() == TunePlan(trials=50, timeout=1800.0, objective="val_loss", direction="maximize",
                                         sampler="random", pruner="hyperband", workers=4,
                                         storage="postgresql://user@host/db", study="mnist-width", seed=7).model_dump()
    assert list(tune.origins) == list(TunePlan.model_fields)[1:]  # every setting, where it was written
    assert tune.span("seed").line == TUNE_LINE + 9 and tune.span("trials").col == 3


@pytest.mark.parametrize("written, seconds", [("90", 90.0), ("2.5", 2.5), ('"90s"', 90.0), ('"30m"', 1800.0),
                                              ('"2h"', 7200.0), ('"1.5h"', 5400.0), ('" 10 m "', 600.0),
                                              ("none", None)])
def test_timeout_in_seconds_or_as_a_duration(written, seconds):
    assert tune_of(f"  timeout: {written}").timeout == seconds


@pytest.mark.parametrize("written, value", [("pruner: none", "none"), ("seed: none", None), ("storage: none", None),
                                            ("study: none", None), ("trials: 3.0", 3), ("seed: 0", 0),
                                            ('storage: "sqlite:///study.db"', "sqlite:///study.db"),
                                            ('storage: "mysql+pymysql://u:p@host/db"', "mysql+pymysql://u:p@host/db"),
                                            ("study: mnist_width", "mnist_width")])
def test_values_as_written(written, value):
    key = written.split(":")[0]
    assert getattr(tune_of(f"  {written}"), key) == value


def test_constants_may_give_values():
    tune = tune_of("  trials: 2 * n\n  seed: n", head="let n = 8\n" + HEAD)
    assert (tune.trials, tune.seed) == (16, 8)


@pytest.mark.parametrize("train, objective, direction", [
    ("  loss: mse\n  validation_split: 0.2", "val_loss", "minimize"),
    ("  loss: mse\n  metrics: [mae]\n  validation_split: 0.2", "val_mae", "minimize"),
    ("  loss: mse\n  metrics: [rmse, mae]\n  validation_split: 0.2", "val_root_mean_squared_error", "minimize"),
    ("  loss: mse\n  metrics: [mae(name=\"err\")]\n  validation_split: 0.2", "val_err", "minimize"),
    ("  loss: binary_crossentropy\n  metrics: [precision(thresholds=0.3), auc]\n  validation_split: 0.2",
     "val_auc", "maximize"),  # a metric Keras numbers is passed over
    ("  loss: sparse_categorical_crossentropy\n  metrics: [acc]\n  validation: kfold(3)", "val_acc", "maximize"),
])
def test_default_objective_and_direction(train, objective, direction):
    tune = tune_of("", train)
    assert (tune.objective, tune.direction) == (objective, direction)


def test_direction_written_wins():
    assert tune_of("  objective: val_loss\n  direction: maximize").direction == "maximize"


@pytest.mark.parametrize("objective, direction", [
    ("val_loss", "minimize"), ("val_a_loss", "minimize"), ("val_mse", "minimize"), ("val_mae", "minimize"),
    ("val_rmse", "minimize"), ("val_mape", "minimize"), ("val_root_mean_squared_error", "minimize"),
    ("val_mean_squared_logarithmic_error", "minimize"), ("val_categorical_crossentropy", "minimize"),
    ("val_sparse_categorical_crossentropy", "minimize"), ("val_kl_divergence", "minimize"), ("val_logcosh", "minimize"),
    ("val_squared_hinge", "minimize"), ("val_poisson", "minimize"), ("val_false_negatives", "minimize"),
    ("val_accuracy", "maximize"), ("val_acc", "maximize"), ("val_auc", "maximize"), ("val_precision", "maximize"),
    ("val_r2_score", "maximize"), ("val_true_positives", "maximize"), ("val_cosine_similarity", "maximize"),
    ("val_b_sparse_top_k_categorical_accuracy", "maximize"), ("val_f1_score", "maximize"),
])
def test_direction_of_a_name(objective, direction):
    assert direction_of(objective) == direction


def test_direction_of_a_named_metric_is_its_class():
    train = train_of('[mae(name="spread"), auc(name="area")]')
    assert direction_of("val_spread") == "maximize"  # by the name alone: nothing says lower is better
    assert direction_of("val_spread", train) == "minimize"  # a MeanAbsoluteError
    assert direction_of("val_area", train) == "maximize"


def test_default_objective_without_a_train_section_plan():
    assert default_objective(None) == "val_loss"
    assert default_objective(train_of("[]")) == "val_loss"
    assert default_objective(train_of("[rmse]")) == "val_root_mean_squared_error"


TWO = "model m {\n  input x: (4,)\n  h = dense(8)\n  a = h -> dense(3, activation=softmax)\n  b = h -> dense(1)\n" \
      "  output a, b\n}\n"  # lines 1-7


def test_several_outputs_name_each_value_after_its_output():
    train = train_of("[[accuracy, auc], [mae]]", head=TWO)
    values = logged_values(train, ["a", "b"])
    assert [v.name for v in values] == ["loss", "a_loss", "b_loss", "a_accuracy", "a_auc", "b_mae"]
    assert default_objective(train, ["a", "b"]) == "val_a_accuracy"
    flat = train_of("[accuracy, mae]", head=TWO)  # one per output, as Keras reads a list as long as the outputs
    assert [v.name for v in logged_values(flat, ["a", "b"])][3:] == ["a_accuracy", "b_mae"]
    assert logged_values(train_of("[accuracy, mae, mse]", head=TWO), ["a", "b"]) is None  # Keras's names unknown
    tune = tune_of("  objective: val_b_mae", "  loss: [mse, mse]\n  metrics: [[accuracy], [mae]]\n"
                   "  validation_split: 0.1", head=TWO)
    assert (tune.objective, tune.direction) == ("val_b_mae", "minimize")


def test_a_repeated_metric_name_is_numbered_as_keras_numbers_it():
    train = train_of("[accuracy, mae, accuracy, accuracy]")
    assert [v.name for v in logged_values(train)] == ["loss", "accuracy", "mae", "accuracy_1", "accuracy_2"]


def test_the_names_are_those_keras_logs():
    """`logged_values` against a real `fit`: every name it gives is a key of Keras's history, and the keys it
    cannot name are the metrics Keras numbers (`precision(thresholds=0.3)`: `precision_1`, ...)."""
    from specc.compile.build import build_model
    from specc.train.runner import compile_model

    train = ("  loss: binary_crossentropy\n  metrics: [accuracy, acc, auc, mae, rmse, mse, precision, recall, "
             "precision(thresholds=0.3), auc(name=\"area\"), mae(name=\"spread\"), log_cosh_error, r2_score, "
             "binary_accuracy, exact_match, accuracy]\n  validation_split: 0.25")
    head = "model m {\n  input x: (4,)\n  dense(1, activation=sigmoid)\n}\n"
    plan = specc.loads(spec(None, train, head)).plan
    model = build_model(plan)
    compile_model(plan, model)
    rng = np.random.default_rng(0)
    history = model.fit(rng.random((16, 4), dtype="float32"), (rng.random(16) > 0.5).astype("float32"), epochs=1,
                        batch_size=8, validation_split=0.25, verbose=0).history
    values = logged_values(plan.train, plan.outputs)
    named = [f"val_{v.name}" for v in values if v.name is not None]
    assert set(named) <= set(history)
    assert len(set(named)) == len(named)
    validation = [k for k in history if k.startswith("val_")]
    assert len(validation) == len(values)  # one column per value; the numbered ones are the values without a name
    assert "val_root_mean_squared_error" in named and "val_rmse" not in history
    assert {"val_area", "val_spread", "val_accuracy_1", "val_exact_match"} <= set(named)


def test_a_section_is_in_the_diff_of_two_specs():
    a = specc.loads(spec("  trials: 10")).plan
    b = specc.loads(spec("  trials: 30\n  sampler: random")).plan
    changes = {c.key: (c.old, c.new) for c in diff_settings(a, b)}
    assert changes == {"tune.trials": (10, 30), "tune.sampler": ("tpe", "random")}


# -- mistakes: located errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("setting, col, message, hint", [
    ("trials: 0", 11, "`trials` must be a whole number >= 1, got `0`", "e.g. `trials: 50`"),
    ("trials: 2.5", 11, "`trials` must be a whole number >= 1, got `2.5`", "e.g. `trials: 50`"),
    ("trials: many", 11, "`trials` must be a whole number >= 1, got `many`", "e.g. `trials: 50`"),
    ("workers: 0", 12, "`workers` must be a whole number >= 1, got `0`", "e.g. `workers: 4`"),
    ("workers: true", 12, "`workers` must be a whole number >= 1, got `true`", "e.g. `workers: 4`"),
    ("seed: -1", 9, "`seed` must be a whole number >= 0, got `-1`", "e.g. `seed: 0`"),
    ('timeout: "30 minutes"', 12, '`timeout` is a number of seconds or a duration in quotes such as "90s", "30m" '
     'or "2h", got `30 minutes`', 'e.g. `timeout: "30m"`'),
    ('timeout: "2d"', 12, "`timeout` is a number of seconds or a duration", 'e.g. `timeout: "30m"`'),
    ("timeout: 0", 12, "`timeout` must be more than 0 seconds, got `0`", "leave `timeout` out"),
    ('timeout: "0m"', 12, "`timeout` must be more than 0 seconds, got `0m`", "leave `timeout` out"),
    ("timeout: [1]", 12, "`timeout` is a number of seconds, or a duration in quotes", 'e.g. `timeout: "30m"`'),
    ("sampler: tpee", 12, "unknown sampler `tpee`", "did you mean `tpe`?"),
    ("sampler: nsga2", 12, "unknown sampler `nsga2`", "`sampler` is one of: tpe, random, grid, cmaes"),
    ("pruner: medain", 11, "unknown pruner `medain`", "did you mean `median`?"),
    ("pruner: false", 11, "unknown pruner `false`", "`pruner` is one of: median, hyperband, none"),
    ("direction: maximise", 14, "unknown direction `maximise`", "did you mean `maximize`?"),
    ("direction: up", 14, "unknown direction `up`", "`direction` is one of: maximize, minimize"),
    ('storage: "study.db"', 12, "`storage` is a database URL, `DATABASE://...`, got `study.db`",
     'for a SQLite file: `storage: "sqlite:///study.db"`'),
    ("storage: 3", 12, '`storage` is an Optuna storage URL in quotes, e.g. `storage: "sqlite:///study.db"`, got `3`',
     None),
    ('storage: "postgres://user@host/db"', 12, "SQLAlchemy, which Optuna keeps a study with, spells PostgreSQL "
     "`postgresql://`", '`storage: "postgresql://user@host/db"`'),
    ('storage: "redis://localhost:6379"', 12, "Optuna cannot keep a study in `redis://`",
     "it takes the databases of SQLAlchemy: `sqlite://`"),
    ('storage: "mysq://host/db"', 12, "Optuna cannot keep a study in `mysq://`", "did you mean `mysql`?"),
    ('storage: "sqlite://"', 12, "`sqlite://` is a SQLite database in memory", 'a file: `storage: "sqlite:///'),
    ('study: "a/b"', 10, "`study` is a name of letters, digits, `_`, `-` and `.` (at most 128), got `a/b`",
     'e.g. `study: "mnist-width"`'),
    ('study: ""', 10, "`study` is a name of letters", 'e.g. `study: "mnist-width"`'),
    ("study: 3", 10, "`study` is a name of letters", 'e.g. `study: "mnist-width"`'),
    ("objective: 3", 14, "`objective` is `val_loss` or `val_` and the name of a metric of `train`, e.g. `objective: "
     "val_accuracy`, got `3`", None),
    ("objective: accuracy", 14, "`accuracy` is measured on the training data, where a model that memorizes it scores "
     "best; the objective is a value of the validation data", "`objective: val_accuracy`"),
    ("objective: loss", 14, "`loss` is measured on the training data", "`objective: val_loss`"),
    ("objective: test_accuracy", 14, "`objective` cannot be `test_accuracy`: choosing hyperparameters by the test "
     "split's score leaks the test split into the choice", "score trials on the validation data: `objective: "
     "val_accuracy`"),
    ("objective: test_loss", 14, "`objective` cannot be `test_loss`", "score trials on the validation data: "
     "`objective: val_loss`"),
    ("objective: val_acuracy", 14, "a run of this spec logs no `val_acuracy`; it logs `val_loss`, `val_accuracy`",
     "did you mean `val_accuracy`?"),
    ("objective: val_r2_score", 14, "a run of this spec logs no `val_r2_score`; it logs `val_loss`, "
     "`val_accuracy`",
     "add the metric to `train`'s `metrics`"),
    ("objective: acuracy", 14, "unknown objective `acuracy`: it is `val_loss` or `val_` and the name of a metric",
     "did you mean `val_accuracy`?"),
    ("frobnicate: 1", 3, "unknown setting `frobnicate` in `tune`", "`tune` settings: trials, timeout, objective"),
    ("epochs: 3", 3, "unknown setting `epochs` in `tune`", "`epochs` belongs in `train`"),
])
def test_a_mistake_is_located_at_its_value(setting, col, message, hint):
    ((line, at, got, got_hint),) = errors(spec("  " + setting))
    assert (line, at) == (TUNE_LINE, col)
    assert got.startswith(message), got
    if hint is None:
        assert got_hint is None
    else:
        assert got_hint and got_hint.startswith(hint), got_hint


def test_a_setting_written_twice():
    ((line, col, message, _),) = errors(spec("  trials: 3\n  trials: 4"))
    assert (line, col, message) == (TUNE_LINE + 1, 3, "setting `trials` appears twice")


def test_each_mistake_of_a_section_is_reported():
    found = errors(spec("  trials: 0\n  sampler: tpee\n  objective: accuracy\n  workers: 4"))
    assert [(line, col) for line, col, _, _ in found] == [(TUNE_LINE, 11), (TUNE_LINE + 1, 12), (TUNE_LINE + 2, 14)]


@pytest.mark.parametrize("metrics, objective, message, hint", [
    ("[mae, rmse]", "val_rmse", "Keras logs the metric `rmse` as `root_mean_squared_error`: a run of this spec logs "
     "no `val_rmse`", "`objective: val_root_mean_squared_error`"),
    ('[auc(name="area")]', "val_auc", "Keras logs the metric `auc` as `area`", "`objective: val_area`"),
    ("[precision(thresholds=0.3)]", "val_precision", "Keras numbers a `precision` metric made without a `name` "
     "(`precision_1`, `precision_2`, ...) by how many the process made before it, so no trial can find "
     "`val_precision`", 'name it in `train`\'s `metrics`: `precision(..., name="precision")`'),
    ("[precision(thresholds=0.3)]", "val_precision_1", "a run of this spec logs no `val_precision_1`; it logs "
     "`val_loss`", None),
])
def test_an_objective_keras_logs_by_another_name(metrics, objective, message, hint):
    train = f"  loss: mse\n  metrics: {metrics}\n  validation_split: 0.1"
    ((line, col, got, got_hint),) = errors(spec(f"  objective: {objective}", train))
    assert (line, col) == (TUNE_LINE, 14) and got.startswith(message), got
    assert hint is None or got_hint == hint, got_hint


def test_an_objective_of_one_output_names_it():
    train = "  loss: [sparse_categorical_crossentropy, mse]\n  metrics: [[accuracy], [mae]]\n  validation_split: 0.1"
    ((line, col, message, hint),) = errors(spec("  objective: val_accuracy", train, head=TWO))
    assert (line, col) == (14, 14)
    assert message == ("a run of this spec logs no `val_accuracy`; it logs `val_loss`, `val_a_loss`, `val_b_loss`, "
                       "`val_a_accuracy`, `val_b_mae`")
    assert hint == "did you mean `val_a_accuracy`?"


def test_a_validation_objective_needs_validation_data():
    train = "  loss: mse\n  metrics: [mae]"
    ((line, col, message, hint),) = errors(spec("  objective: val_mae", train))
    assert (line, col) == (TUNE_LINE - 1, 14)
    assert message == "the objective `val_mae` is measured on validation data, and `train` holds none out"
    assert hint == "set `validation_split: 0.1` in `train` (or cross-validate: `validation: kfold(5)`)"
    # Not written: the default objective needs it too; the error is at the section.
    ((line, col, message, _),) = errors(spec("  trials: 5", train))
    assert (line, col) == (TUNE_LINE - 2, 1)
    assert message == "the objective `val_mae` (the default) is measured on validation data, and `train` holds none out"
    # `validation_split: 0` holds nothing out either; k-fold cross-validation does.
    assert errors(spec("", train + "\n  validation_split: 0"))[0][2].startswith("the objective `val_mae` (the default)")
    assert tune_of("", train + "\n  validation: kfold(3)").objective == "val_mae"


def test_a_mistake_in_train_is_not_reported_again_by_tune():
    """`tune` skips what it cannot know: the names of metrics that failed, the validation of a split that failed."""
    found = errors(spec("  objective: val_precison", "  loss: mse\n  metrics: [precison]\n  validation_split: 0.1"))
    assert [m for _, _, m, _ in found] == ["unknown metric `precison`"]
    found = errors(spec("  objective: val_loss", "  loss: mse\n  validation_split: 1.5"))
    assert [m for _, _, m, _ in found] == ["`validation_split` is a fraction in [0, 1), got `1.5`"]


def test_tune_without_train():
    found = errors(HEAD + "tune {\n  trials: 5\n}\n")
    assert found == [(5, 1, "`tune` scores trainings of the model, but the spec has no `train` section",
                      "add `train { loss: ...; validation_split: 0.1 }`")]


def test_a_misplaced_seed_belongs_in_train():
    found = errors(HEAD + "data {\n  x: [[1, 2, 3, 4]]\n  y: [0]\n  seed: 1\n}\n")
    assert found == [(8, 3, "unknown setting `seed` in `data`", "`seed` belongs in `train`")]


def test_the_plan_holds_typed_values():
    assert TunePlan.fits("sampler", "tpe") and not TunePlan.fits("sampler", "bayes")
    assert TunePlan.fits("timeout", 1.5) and TunePlan.fits("timeout", None)
    assert isinstance(train_of("[rmse]").metrics[0], Obj)
