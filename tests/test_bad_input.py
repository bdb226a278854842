"""Bad input: a clear one-line error naming key, value and what is valid; a non-zero exit;
no MLflow run left RUNNING (nor created at all, when the input is rejected up front), and no
artifact or checkpoint left behind."""

from __future__ import annotations

import pytest

from conftest import ROOT, TINY, compose
from rnnlab.config import ConfigError

# (overrides, text the error must contain)
REJECTED = [
    (["seq_len=0"], "seq_len=0: must be an integer > 0"),
    (["seq_len=-5"], "seq_len=-5: must be an integer > 0"),
    (["seq_len=abc"], "seq_len='abc': must be an integer > 0"),
    (["clip=-1"], "clip=-1: must be a number > 0, or null"),
    (["clip=abc"], "clip='abc'"),
    (["seed=1.5"], "seed=1.5: must be an integer >= 0"),
    (["cell.hidden_size=0"], "cell.hidden_size=0: must be an integer > 0"),
    (["cell.num_layers=0"], "cell.num_layers=0: must be an integer > 0"),
    (["cell=rnn", "cell.nonlinearity=sigmoid"], "cell.nonlinearity='sigmoid': must be one of tanh, relu"),
    (["optim.name=adamw"], "optim.name='adamw': must be one of adam, rmsprop, sgd"),
    (["optim.lr=0"], "optim.lr=0: must be a number > 0"),
    (["trainer.max_steps=ten"], "trainer.max_steps='ten'"),
    (["sweep.report=later"], "sweep.report='later': must be one of background, wait, false"),
]


def rejected(store, *overrides: str) -> str:
    """The ConfigError message a run of these overrides fails with, in this process."""
    with pytest.raises(ConfigError) as caught:
        store.train_in_process(*overrides)
    return str(caught.value)


@pytest.mark.parametrize("overrides,message", REJECTED, ids=[" ".join(o) for o, _ in REJECTED])
def test_bad_value_is_rejected_before_any_run(store, overrides, message):
    assert message in rejected(store, *overrides)
    assert store.runs() == [] and store.leftovers() == []


@pytest.mark.parametrize("overrides,message", [
    (["seq_len=-5"], "error: invalid config: seq_len=-5: must be an integer > 0"),
    (["task=forecast", "seq_len=20000"], "error: invalid config: seq_len=20000"),
], ids=["before-the-imports", "after-the-imports"])
def test_a_rejected_command_line_exits_2_with_one_line(store, overrides, message):
    """What the user sees: exit code 2 and one line naming key, value and what is valid,
    whether the value is caught up front or by the task that loads the data."""
    proc = store.train(*overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, f"expected one line, got:\n{proc.stderr}"
    assert store.runs() == [] and store.leftovers() == []


@pytest.mark.parametrize("override,group", [("cell=LSTM", "cell"), ("task=char-lm", "task")])
def test_unknown_group_choice_lists_valid_ones(store, override, group):
    """Every registered choice of the group (its yaml files) is named."""
    choices = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
    proc = store.train(override, check=False)
    assert proc.returncode != 0
    assert "Could not find" in proc.stderr
    for c in choices:
        assert c in proc.stderr
    assert store.runs() == [] and store.leftovers() == []


@pytest.mark.parametrize("corpus,message", [
    ("/no/such/file.txt", "must be 'default', 'all' or the path of an existing UTF-8 text file"),
    ("EMPTY", "is empty"),
    ("BINARY", "is a binary file"),
])
def test_bad_corpus_is_rejected_before_any_run(store, tmp_path, corpus, message):
    if corpus == "EMPTY":
        (tmp_path / "empty.txt").write_text("")
        corpus = str(tmp_path / "empty.txt")
    elif corpus == "BINARY":
        (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
        corpus = str(tmp_path / "blob.bin")
    error = rejected(store, f"task.corpus={corpus}")
    assert f"task.corpus='{corpus}'" in error and message in error
    assert store.runs() == [] and store.leftovers() == []


def test_seq_len_longer_than_corpus(store, tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be " * 20)  # 380 chars: val and test splits get 19 each
    assert "seq_len=50: must be < 19" in rejected(store, f"task.corpus={text}", "seq_len=50")
    assert store.runs() == [] and store.leftovers() == []


def test_failure_after_the_run_started_marks_it_failed(store):
    """A real error mid-run (here: an argument Lightning's Trainer rejects) exits non-zero and
    leaves the run FAILED with the error as a tag, not RUNNING."""
    with pytest.raises(Exception, match="no_such_argument"):
        store.train_in_process("+trainer.no_such_argument=1")
    run = store.only_run("char_lm")
    assert run.info.status == "FAILED"
    assert "no_such_argument" in run.data.tags["error"]


@pytest.mark.parametrize("overrides,env,message", [
    (["tracking.uri=http://127.0.0.1:9"], {}, "tracking.uri='http://127.0.0.1:9': cannot reach the MLflow server"),
    ([], {"MLFLOW_TRACKING_URI": "sqlite:////proc/rnnlab/mlflow.db"},
     "tracking.uri='sqlite:////proc/rnnlab/mlflow.db': cannot write"),
    (["tracking.artifact_root=/proc/rnnlab"], {}, "tracking.artifact_root='/proc/rnnlab': cannot write"),
    (["task=forecast", "seq_len=20000"], {}, "seq_len=20000"),
    (["task=sentiment", "task.distance=25"], {}, "task.distance=25"),
    (["task=forecast", "task.series=/no/such.csv"], {}, "task.series='/no/such.csv'"),
], ids=["unreachable-server", "unwritable-store", "unwritable-artifacts", "seq_len-longer-than-series",
        "distance-not-below-seq_len", "missing-csv"])
def test_unusable_store_or_data_fails_at_start(store, monkeypatch, overrides, env, message):
    for key, value in env.items():  # read by the config's ${oc.env:MLFLOW_TRACKING_URI}
        monkeypatch.setenv(key, value)
    uri = [] if env else [f"tracking.uri={store.uri}"]
    with pytest.raises(ConfigError) as caught:
        from rnnlab.run import train

        train(compose(*TINY, *uri, f"tracking.artifact_root={store.dir / 'mlruns'}", *overrides))
    assert message in str(caught.value)
    assert store.runs() == [] and store.leftovers() == []
