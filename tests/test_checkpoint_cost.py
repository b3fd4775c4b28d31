"""The logic of bench_resume: the checkpoint it times is the runner's, and sizes are real files."""

from neumeta_cl.studies.checkpoint_cost import QUICK, measure


def test_checkpoint_cost_times_every_experience_and_sizes_follow_the_state(tmp_path):
    base = ["benchmark.scenario=class", "model=mlp", "train.threads=1", *QUICK]
    naive = measure([*base, "strategy=naive"], tmp_path / "naive")
    replay = measure([*base, "strategy=replay", "strategy.buffer_size=500"], tmp_path / "replay")
    assert len(naive["checkpoint_ms"]) == len(naive["train_seconds"]) == 5
    assert all(ms > 0 for ms in naive["checkpoint_ms"]) and 0 < naive["fraction"]
    # Replay's checkpoint adds its buffer: 500 digits of 64 float32 pixels (125 KiB) and their labels.
    extra_mb = replay["checkpoint_mb"] - naive["checkpoint_mb"]
    assert 500 * 64 * 4 / 2**20 <= extra_mb < 2 * 500 * 64 * 4 / 2**20 + 0.05
