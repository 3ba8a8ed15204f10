import subprocess
import sys

import pytest

from tinycourse.cli import main

SEP = "<|endoftext|>"


@pytest.fixture
def corpus(tmp_path, stories):
    path = tmp_path / "c.txt"
    path.write_text("".join(f"{s} ({i})\n{SEP}\n" for i, s in enumerate(stories * 2)))
    return path


def test_run_and_status(corpus, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["run", "--data", str(corpus), "--runs-dir", str(runs), "--name", "c",
            "--stages", "shards", "--set", "tokenizer.vocab_size=300"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[tokenizer] done" in out and "[shards] done" in out
    assert (runs / "c" / "shards" / "manifest.json").exists()
    assert main(args) == 0
    assert "[shards] up to date" in capsys.readouterr().out
    assert main(args + ["--force"]) == 0
    out = capsys.readouterr().out
    assert "[shards] done" in out and "[tokenizer] up to date" in out
    assert main(["status", "--runs-dir", str(runs), "--name", "c"]) == 0
    assert "train_tokens=" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--set", "model.n_layer=3"], "Did you mean 'model.n_layers'"),
    (["--set", "train.lr=fast"], "train.lr expects float"),
    (["--stages", "tokeniser"], "unknown stage 'tokeniser'"),
    (["--data", "/no/such/file.txt"], "no such file"),
    (["--data", "tinystories"], "cannot reach the Hugging Face hub"),
    (["--preset", "huge"], "unknown preset"),
])
def test_bad_input_gives_clear_error(args, message, tmp_path, capsys):
    assert main(["run", "--runs-dir", str(tmp_path), "--stages", "tokenizer", *args]) == 2
    assert message in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "tinycourse", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "storyworld" in out and "status" in out
