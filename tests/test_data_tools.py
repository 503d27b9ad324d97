"""validate_store findings, the dataset tools (merge/split/drop/export/import) and the `postbc data` verbs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import tyro
import zarr
from _data_helpers import assert_episodes_equal, random_steps, schemas, standard_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postbc_core.cli.data_cmd import DATA_COMMANDS
from postbc_core.data import (
    EpisodeStore,
    drop,
    export_diffusion_policy,
    get_val_mask,
    import_diffusion_policy,
    info,
    merge,
    split,
    validate_store,
)
from postbc_core.data.zarr_compat import ZARR_MAJOR
from postbc_core.errors import ConfigError, PostBCError, StoreError, StoreValidationError


# Raw zarr writes for hand-made stores, with zarr-python 3 (CI's 3.11) or 2 (the robot's 3.10; its only format is 2).
def _new_v2_group(path):
    return zarr.open_group(str(path), mode="w", **({"zarr_format": 2} if ZARR_MAJOR >= 3 else {}))


def _new_array(group, name, **kw):
    return (group.create_array if ZARR_MAJOR >= 3 else group.create_dataset)(name, **kw)


def _make(path, lengths=(3, 4, 5), seed=0, schema=None, **meta):
    rng = np.random.default_rng(seed)
    schema = schema or standard_schema()
    eps = [random_steps(rng, schema, T) for T in lengths]
    with EpisodeStore.create(path) as s:
        for i, ep in enumerate(eps):
            s.add_episode(ep, success=[True, False, None][i % 3], task=meta.get("task", f"task{i % 2}"),
                          source=meta.get("source", "teleop"), operator="ann", start_time=100.0 + i, end_time=110.0 + i)
    return eps


def _meta_rows(store):
    return [{k: v for k, v in store.episode_meta(i).items() if k not in ("index", "start", "end")}
            for i in range(store.n_episodes)]


def _errors(path) -> str:
    rep = validate_store(path)
    assert not rep.ok
    return "\n".join(rep.errors)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def test_valid_store_has_no_findings(tmp_path):
    _make(tmp_path / "s.zarr")
    rep = validate_store(tmp_path / "s.zarr")
    assert rep.ok and rep.errors == [] and rep.warnings == [] and (rep.n_episodes, rep.n_steps) == (3, 12)
    rep.raise_for_problems()  # no error


def test_validation_missing_groups_and_arrays(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    del g["meta/episode_ends"]
    assert "missing meta/episode_ends" in _errors(p)
    del g["data"]
    assert "missing data" in _errors(p)
    g2 = _new_v2_group(str(tmp_path / "m.zarr"))
    g2.attrs.update(format="postbc-episodes", format_version=1)
    g2.require_group("data")
    _new_array(g2.require_group("meta"), "episode_ends", shape=(0,), dtype="int64")
    errs = _errors(tmp_path / "m.zarr")
    assert "missing meta/success" in errs and "missing meta/task" in errs
    assert "not a zarr group" in _errors(tmp_path / "nothing_here.zarr") or "no such store" in _errors(
        tmp_path / "nothing_here.zarr")


def test_validation_ragged_lengths(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    g["data/reward"].resize((10,))
    assert "ragged data: data/reward has 10 steps but meta/episode_ends commits 12" in _errors(p)
    with pytest.raises(StoreValidationError, match="ragged data: data/reward"):
        EpisodeStore.open(p, "a")
    with pytest.raises(StoreValidationError, match="ragged data: data/reward"):
        info(p)
    g["data/reward"].resize((12,))
    g["meta/task"].resize((2,))
    assert "meta/task has 2 rows but 3 episodes are committed" in _errors(p)


def test_validation_bad_dtypes(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    _new_array(g["data"], "label", shape=(12,), dtype="<U4", fill_value="")
    _new_array(g["data"], "wrist_rgb", shape=(12, 4, 4, 3), dtype="float32", fill_value=0)
    g["meta/success"][0] = 7
    errs = _errors(p)
    assert "data/label has dtype <U4 (unicode string): only numeric and bool arrays are allowed" in errs
    assert "data/wrist_rgb: rgb images must be uint8" in errs and "float32" in errs
    assert "meta/success: episode 0 has label 7" in errs
    del g["meta/episode_ends"]
    _new_array(g["meta"], "episode_ends", shape=(3,), dtype="float64", fill_value=0)[:] = [3, 7, 12]
    assert "meta/episode_ends has dtype float64, expected int64" in _errors(p)


def test_validation_nan_names_key_episode_and_step(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    g["data/joint_pos"][3 + 2, 4] = np.nan  # episode 1, step 2
    g["data/timestamp"][11] = np.inf  # episode 2, step 4
    errs = _errors(p)
    assert "data/joint_pos holds NaN/inf at episode 1 step 2" in errs
    assert "data/timestamp holds NaN/inf at episode 2 step 4" in errs
    assert validate_store(p, scan_values=False).ok  # the scan is what finds them


def test_validation_non_monotonic_episode_ends(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    g["meta/episode_ends"][:] = [7, 3, 12]
    assert "meta/episode_ends is not strictly increasing at episode 1 (7 -> 3)" in _errors(p)


def test_validation_newer_and_unknown_format_version(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    g.attrs["format_version"] = 2
    assert "format_version 2 is newer than this postbc_core supports (1): upgrade postbc_core" in _errors(p)
    with pytest.raises(StoreValidationError, match="upgrade postbc_core"):
        EpisodeStore.open(p)
    g.attrs["format_version"] = "one"
    assert "unknown format_version 'one'" in _errors(p)


def test_validation_uncommitted_tail_is_a_warning(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p)
    g = zarr.open_group(str(p), mode="r+")
    for k in g["data"].array_keys():
        a = g["data"][k]
        a.resize((15, *a.shape[1:]))
    rep = validate_store(p)
    assert rep.ok
    assert any("uncommitted tail" in w and "open in append mode to recover" in w for w in rep.warnings)


# ----------------------------------------------------------------------------------------------
# tools
# ----------------------------------------------------------------------------------------------

def test_info_summarises(tmp_path):
    p = tmp_path / "s.zarr"
    _make(p, lengths=(3, 4, 5, 6))
    d = info(p)
    assert (d["episodes"], d["steps"], d["format_version"]) == (4, 18, 1)
    assert d["episode_length"] == {"min": 3, "max": 6, "mean": 4.5, "median": 4.5}
    assert d["success"] == {"success": 2, "failure": 1, "unknown": 1}
    assert d["sources"] == {"teleop": 4} and d["tasks"] == {"task0": 2, "task1": 2}
    rgb = d["keys"]["front_rgb"]
    assert rgb["shape"] == [8, 8, 3] and rgb["dtype"] == "uint8" and rgb["chunks"] == [1, 8, 8, 3]
    assert "lz4" in rgb["compressor"] and rgb["bytes"] == 18 * 8 * 8 * 3 and rgb["bytes_stored"] > 0


def test_merge_concatenates_and_checks_schemas(tmp_path):
    a = _make(tmp_path / "a.zarr", lengths=(3, 4), seed=1)
    b = _make(tmp_path / "b.zarr", lengths=(5,), seed=2, task="other", source="policy")
    out = merge([tmp_path / "a.zarr", tmp_path / "b.zarr"], tmp_path / "m.zarr")
    with EpisodeStore.open(out) as m, EpisodeStore.open(tmp_path / "a.zarr") as sa, \
            EpisodeStore.open(tmp_path / "b.zarr") as sb:
        assert_episodes_equal(m, a + b)
        assert _meta_rows(m) == _meta_rows(sa) + _meta_rows(sb)
    with pytest.raises(StoreError, match="already exists"):
        merge([tmp_path / "a.zarr"], out)
    schema = dict(standard_schema())
    schema["joint_pos"] = ((7,), np.float32)
    _make(tmp_path / "c.zarr", schema=schema)
    with pytest.raises(StoreError, match=r"cannot merge .*c\.zarr into .*a\.zarr: data/joint_pos is \(6,\) float32 per step in .*a\.zarr but \(7,\) float32 in .*c\.zarr;"):
        merge([tmp_path / "a.zarr", tmp_path / "c.zarr"], tmp_path / "m2.zarr")
    assert not (tmp_path / "m2.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_merge_validates_inputs(tmp_path):
    _make(tmp_path / "a.zarr")
    p = tmp_path / "bad.zarr"
    _make(p)
    zarr.open_group(str(p), mode="r+")["data/reward"][1] = np.nan
    with pytest.raises(StoreValidationError, match=r"(?s)bad\.zarr.*data/reward holds NaN/inf at episode 0 step 1"):
        merge([tmp_path / "a.zarr", p], tmp_path / "m.zarr")


def test_split_by_episode(tmp_path):
    eps = _make(tmp_path / "s.zarr", lengths=(2, 3, 4, 5, 6, 7, 8))
    paths = split(tmp_path / "s.zarr", tmp_path / "split", val_fraction=0.3, seed=4)
    mask = get_val_mask(7, 0.3, seed=4)
    assert mask.sum() == 2
    with EpisodeStore.open(paths["train"]) as tr, EpisodeStore.open(paths["val"]) as va:
        assert_episodes_equal(tr, [e for e, m in zip(eps, mask) if not m])
        assert_episodes_equal(va, [e for e, m in zip(eps, mask) if m])
    with pytest.raises(ConfigError, match="val_fraction=1.0 must be in"):
        split(tmp_path / "s.zarr", tmp_path / "x", val_fraction=1.0)


def test_drop_in_place_and_to_new_path(tmp_path):
    p = tmp_path / "s.zarr"
    eps = _make(p, lengths=(2, 3, 4, 5))
    with EpisodeStore.open(p) as s:
        meta = _meta_rows(s)
    out = drop(p, [1], out=tmp_path / "o.zarr")
    with EpisodeStore.open(out) as o:
        assert_episodes_equal(o, [eps[0], eps[2], eps[3]])
    assert drop(p, [0, -1]) == p  # in place
    with EpisodeStore.open(p) as s:
        assert_episodes_equal(s, [eps[1], eps[2]])
        assert _meta_rows(s) == meta[1:3]
    with pytest.raises(ConfigError, match=r"episode index\(es\) \[5\] out of range: .* has 2 episodes"):
        drop(p, [5])
    with EpisodeStore.open(p, "a"):
        with pytest.raises(StoreError, match="only one writer"):
            drop(p, [0])
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.zarr", "s.zarr"]


def test_drop_in_place_keeps_original_when_copy_fails(tmp_path, monkeypatch):
    p = tmp_path / "s.zarr"
    eps = _make(p)
    from postbc_core.data import tools

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tools, "_copy_episodes", boom)
    with pytest.raises(OSError, match="disk full"):
        drop(p, [0])
    with EpisodeStore.open(p) as s:
        assert_episodes_equal(s, eps)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.zarr"]


@pytest.mark.parametrize("suffix", [".zarr", ".zarr.zip"])
def test_export_plain_replay_buffer_and_import_back(tmp_path, suffix):
    eps = _make(tmp_path / "s.zarr")
    out = export_diffusion_policy(tmp_path / "s.zarr", tmp_path / f"dp{suffix}", keys=["joint_pos", "front_rgb"],
                                  rename={"joint_pos": "action"})
    if suffix.endswith(".zip"):
        assert zipfile.is_zipfile(out)
        names = zipfile.ZipFile(out).namelist()
        assert "meta/episode_ends/.zarray" in names and "data/action/.zarray" in names
        root = zarr.open_group(store=zarr.storage.ZipStore(out, mode="r"), mode="r")
    else:
        root = zarr.open_group(str(out), mode="r")
    # plain ReplayBuffer layout: data/<key>, meta/episode_ends only, no postbc attributes
    assert sorted(root["data"].array_keys()) == ["action", "front_rgb"]
    assert list(root["meta"].array_keys()) == ["episode_ends"] and dict(root.attrs) == {}
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [3, 7, 12])
    assert root["meta/episode_ends"].dtype == np.int64
    np.testing.assert_array_equal(root["data/action"][:], np.concatenate([e["joint_pos"] for e in eps]))

    back = import_diffusion_policy(out, tmp_path / "back.zarr", rename=["action=joint_pos"], task="lift")
    with EpisodeStore.open(back) as s:
        assert_episodes_equal(s, [{k: e[k] for k in ("joint_pos", "front_rgb")} for e in eps])
        m = s.episode_meta(0)
        assert (m["task"], m["source"], m["success"]) == ("lift", "import", None)
    assert validate_store(back).ok


def _dp_store(path, data: dict, ends, ends_dtype="int64"):
    g = _new_v2_group(str(path))
    for k, v in data.items():
        _new_array(g.require_group("data"), k, shape=v.shape, dtype=v.dtype,
                   fill_value="" if v.dtype.kind == "U" else 0)[...] = v
    _new_array(g.require_group("meta"), "episode_ends", shape=(len(ends),), dtype=ends_dtype)[:] = ends
    return path


def test_import_errors_are_clear(tmp_path):
    good = {"obs": np.zeros((6, 3), np.float32), "action": np.zeros((6, 2), np.float32)}
    with pytest.raises(ConfigError, match=r"rename names key\(s\) \['act'\] .* \(available: \['action', 'obs'\]\)"):
        import_diffusion_policy(_dp_store(tmp_path / "a", good, [2, 6]), tmp_path / "o1", rename={"act": "x"})
    ragged = dict(good, action=np.zeros((5, 2), np.float32))
    with pytest.raises(StoreValidationError, match=r"ragged data: data/action has 5 steps but meta/episode_ends "
                                                   r"commits 6"):
        import_diffusion_policy(_dp_store(tmp_path / "b", ragged, [2, 6]), tmp_path / "o2")
    longer = dict(good, obs=np.zeros((8, 3), np.float32))
    with pytest.raises(StoreValidationError, match=r"ragged data: data/obs has 8 steps but meta/episode_ends ends "
                                                   r"at 6"):
        import_diffusion_policy(_dp_store(tmp_path / "c", longer, [2, 6]), tmp_path / "o3")
    strings = dict(good, name=np.array(["a"] * 6))
    with pytest.raises(StoreValidationError, match=r"data/name has dtype <U1 \(unicode string\)"):
        import_diffusion_policy(_dp_store(tmp_path / "d", strings, [2, 6]), tmp_path / "o4")
    nan = dict(good, obs=np.zeros((6, 3), np.float32))
    nan["obs"][3, 1] = np.nan
    with pytest.raises(StoreValidationError, match=r"data/obs holds NaN/inf at episode 1 step 1"):
        import_diffusion_policy(_dp_store(tmp_path / "e", nan, [2, 6]), tmp_path / "o5")
    g = _new_v2_group(str(tmp_path / "f"))
    _new_array(g.require_group("data"), "obs", shape=(3,), dtype="float32")
    with pytest.raises(StoreValidationError, match="missing meta"):
        import_diffusion_policy(tmp_path / "f", tmp_path / "o6")
    with pytest.raises(StoreValidationError, match="episode_ends has dtype float64"):
        import_diffusion_policy(_dp_store(tmp_path / "g", good, [2, 6], "float64"), tmp_path / "o7")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))
    # int32 ends are fine (converted); the result validates
    out = import_diffusion_policy(_dp_store(tmp_path / "h", good, [2, 6], "int32"), tmp_path / "o8")
    with EpisodeStore.open(out) as s:
        assert s.episode_lengths.tolist() == [2, 4]


# ----------------------------------------------------------------------------------------------
# property: every tool preserves the data
# ----------------------------------------------------------------------------------------------

@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas(max_keys=3), lengths=st.lists(st.integers(1, 5), min_size=2, max_size=5),
       seed=st.integers(0, 2**31), drop_idx=st.lists(st.integers(0, 4), max_size=3))
def test_tools_preserve_data_property(tmp_path_factory, schema, lengths, seed, drop_idx):
    d = tmp_path_factory.mktemp("tools")
    rng = np.random.default_rng(seed)
    eps = [random_steps(rng, schema, T) for T in lengths]
    with EpisodeStore.create(d / "s.zarr") as s:
        for ep in eps:
            s.add_episode(ep, source="synthetic")
    merged = merge([d / "s.zarr", d / "s.zarr"], d / "m.zarr", allow_repeats=True)
    with EpisodeStore.open(merged) as m:
        assert_episodes_equal(m, eps + eps)
    paths = split(d / "s.zarr", d / "sp", val_fraction=0.4, seed=seed % 7)
    mask = get_val_mask(len(eps), 0.4, seed=seed % 7)
    with EpisodeStore.open(paths["train"]) as tr, EpisodeStore.open(paths["val"]) as va:
        assert_episodes_equal(tr, [e for e, v in zip(eps, mask) if not v])
        assert_episodes_equal(va, [e for e, v in zip(eps, mask) if v])
    idx = sorted({i for i in drop_idx if i < len(eps)})
    if idx and len(idx) < len(eps):  # dropping every episode is refused
        out = drop(d / "s.zarr", idx, out=d / "dropped.zarr")
        with EpisodeStore.open(out) as o:
            assert_episodes_equal(o, [e for i, e in enumerate(eps) if i not in idx])
    zipped = export_diffusion_policy(d / "s.zarr", d / "dp.zarr.zip")
    back = import_diffusion_policy(zipped, d / "back.zarr")
    with EpisodeStore.open(back) as b:
        assert_episodes_equal(b, eps)


# ----------------------------------------------------------------------------------------------
# CLI verbs (tyro)
# ----------------------------------------------------------------------------------------------

def test_cli_verbs(tmp_path, capsys):
    _make(tmp_path / "a.zarr")
    _make(tmp_path / "b.zarr", seed=3)

    def run(verb, *args):
        return tyro.cli(DATA_COMMANDS[verb], args=[str(a) for a in args])

    assert set(DATA_COMMANDS) == {"info", "validate", "merge", "split", "drop", "export", "import", "view",
                                  "convert-ee-delta"}
    assert run("info", tmp_path / "a.zarr") == 0
    out = capsys.readouterr().out
    assert "episodes: 3   steps: 12" in out and "front_rgb" in out and "success: 1   failure: 1   unknown: 1" in out
    assert run("info", tmp_path / "a.zarr", "--json-output") == 0
    assert '"episodes": 3' in capsys.readouterr().out
    assert run("validate", tmp_path / "a.zarr") == 0
    assert "OK (3 episodes, 12 steps)" in capsys.readouterr().out
    assert run("merge", tmp_path / "a.zarr", tmp_path / "b.zarr", "--out", tmp_path / "m.zarr") == 0
    assert "6 episodes" in capsys.readouterr().out
    assert run("split", tmp_path / "m.zarr", tmp_path / "sp", "--val-fraction", "0.5", "--seed", "1") == 0
    assert "train: " in capsys.readouterr().out
    assert run("drop", tmp_path / "m.zarr", "--episodes", "0", "-1") == 0
    assert "now has 4 episodes" in capsys.readouterr().out
    assert run("export", tmp_path / "m.zarr", tmp_path / "dp.zarr.zip", "--keys", "joint_pos", "--rename",
               "joint_pos=action") == 0
    assert run("import", tmp_path / "dp.zarr.zip", tmp_path / "i.zarr", "--rename", "action=joint_pos",
               "--task", "lift") == 0
    assert "4 episodes" in capsys.readouterr().out
    with EpisodeStore.open(tmp_path / "i.zarr") as s:
        assert s.keys == ["joint_pos"] and s.episode_meta(0)["task"] == "lift"
    # errors: validate reports with exit 1; tools raise PostBCError for the main CLI to print
    zarr.open_group(str(tmp_path / "a.zarr"), mode="r+")["data/reward"][0] = np.nan
    assert run("validate", tmp_path / "a.zarr") == 1
    assert "data/reward holds NaN/inf at episode 0 step 0" in capsys.readouterr().out
    with pytest.raises(PostBCError, match="already exists"):
        run("merge", tmp_path / "b.zarr", "--out", tmp_path / "m.zarr")
    with pytest.raises(PostBCError, match="OLD=NEW"):
        run("export", tmp_path / "b.zarr", tmp_path / "x.zarr", "--rename", "joint_pos")
    assert not Path(tmp_path / "x.zarr").exists()
