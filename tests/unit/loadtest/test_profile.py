"""Load profiles: validation names the field; shipped profiles load; targets stay local."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgectl.config import EdgectlConfig
from edgectl.errors import EdgectlError
from edgectl.loadtest.profile import load_profile, parse_profile
from edgectl.loadtest.prompts import prompt_pool
from edgectl.loadtest.runner import Target, check_target, variant_config
from tests.paths import REPO_ROOT

PROFILES = sorted((REPO_ROOT / "loadtest" / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_shipped_profiles_are_valid(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.levels


def test_shipped_profiles_include_the_issue_sweep_and_rate_mode() -> None:
    by_name = {p.stem: load_profile(p) for p in PROFILES}
    assert by_name["sweep"].concurrency == [1, 2, 4, 8, 16, 32]
    assert by_name["rate"].mode == "request_rate"
    assert [v.set for v in by_name["batching"].variants] == [{}, {"engine.max_num_seqs": 1}]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "x", "input_tokens": 0}, "input_tokens"),
        ({"name": "x", "concurrency": [1, -2]}, "concurrency"),
        ({"name": "x", "concurrency": []}, "concurrency"),
        ({"name": "x", "concurrency": [2, 2]}, "concurrency"),
        ({"name": "x", "mode": "request_rate"}, "request_rates"),
        ({"name": "x", "mode": "sometimes"}, "mode"),
        ({"name": "x", "max_requests": 3, "warmup_requests": 3}, "warmup_requests"),
        ({"name": "x", "duration_s": 0}, "duration_s"),
        ({"name": "x", "concurency": [1]}, "concurency"),
        ({"name": "x", "variants": [{"name": "a", "set": {"max_num_seqs": 1}}]}, "max_num_seqs"),
        ({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]}, "variants"),
        ({"input_tokens": 4}, "name"),
    ],
)
def test_invalid_profiles_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(EdgectlError, match=field) as err:
        parse_profile(data, "test.yaml")
    assert "test.yaml" in str(err.value)


def test_missing_profile_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(EdgectlError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_users_per_level() -> None:
    sweep = parse_profile({"name": "s", "concurrency": [1, 8]}, "t")
    rate = parse_profile({"name": "r", "mode": "request_rate", "request_rates": [0.5]}, "t")
    assert sweep.users_at(8) == 8
    assert rate.users_at(0.5) == rate.max_users


@pytest.mark.parametrize(
    ("url", "protocol", "user_url"),
    [
        ("grpc://127.0.0.1:8001", "grpc", "127.0.0.1:8001"),
        ("http://localhost:8000", "http", "http://localhost:8000"),
        ("http://[::1]:8000", "http", "http://[::1]:8000"),
    ],
)
def test_target_parsing(url: str, protocol: str, user_url: str) -> None:
    target = Target.parse(url)
    assert (target.protocol, target.user_url) == (protocol, user_url)
    check_target(target, allow_remote=False)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1", "grpc://127.0.0.1", "127.0.0.1:8001"])
def test_bad_target_urls(url: str) -> None:
    with pytest.raises(EdgectlError, match="--target"):
        Target.parse(url)


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.2", "example.com", "8.8.8.8"])
def test_non_loopback_targets_are_refused_without_the_flag(host: str) -> None:
    target = Target.parse(f"http://{host}:8000")
    with pytest.raises(EdgectlError, match="--allow-remote"):
        check_target(target, allow_remote=False)
    check_target(target, allow_remote=True)


def test_variant_config_overrides_keys_and_isolates_the_server(tmp_path: Path) -> None:
    config = variant_config(EdgectlConfig(), {"engine.max_num_seqs": 1}, tmp_path / "v")
    assert config.engine.max_num_seqs == 1
    assert config.server.workdir == tmp_path / "v"
    assert config.server.host == "127.0.0.1"
    assert 8000 not in (config.server.http_port, config.server.grpc_port)
    with pytest.raises(EdgectlError, match="engine.max_num_seqs"):
        variant_config(EdgectlConfig(), {"engine.max_num_seqs": 0}, tmp_path / "w")


def test_prompt_pool_hits_the_token_target_and_differs(bpe) -> None:
    pool = prompt_pool(bpe.encode, bpe.decode, count=8, tokens=24, seed=1)
    assert len({p["text"] for p in pool}) == 8
    assert all(p["tokens"] == len(bpe.encode(p["text"])) for p in pool)
    assert sum(p["tokens"] == 24 for p in pool) >= 7
    assert pool == prompt_pool(bpe.encode, bpe.decode, count=8, tokens=24, seed=1)


def test_run_dir_is_made_absolute_and_must_be_empty(tmp_path: Path, monkeypatch) -> None:
    from edgectl.loadtest.runner import prepare_run_dir

    monkeypatch.chdir(tmp_path)
    run_dir = prepare_run_dir(Path("runs/a"))
    assert run_dir == tmp_path / "runs" / "a" and run_dir.is_dir()
    (run_dir / "records.jsonl").write_text("")
    with pytest.raises(EdgectlError, match="not empty"):
        prepare_run_dir(Path("runs/a"))


def test_fixed_length_runs_use_an_id_from_the_served_tokenizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    from edgectl.loadtest.prompts import load_tokenizer

    vocab = {f"w{i}": i for i in range(37)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(tmp_path / "tokenizer.json"))
    assert parse_profile({"name": "p"}, "p").end_id == "unused"
    assert load_tokenizer(tmp_path).unused_id == 36
