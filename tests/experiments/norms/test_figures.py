"""The statistics-set figure of the norms chapter: set sizes from the library's labels, and
the highlighted voxels are exactly one set."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from mpl_toolkits.mplot3d import Axes3D

from bnbook.experiments.norms.figures import plot_statistics_sets, statistics_set_sizes


@pytest.mark.parametrize("method, groups, expected", [
    ("batch", None, {"sets": 6, "values": 4 * 2 * 3}),
    ("layer", None, {"sets": 4, "values": 6 * 2 * 3}),
    ("instance", None, {"sets": 4 * 6, "values": 2 * 3}),
    ("group", 3, {"sets": 4 * 3, "values": 2 * 2 * 3}),
    ("group", 1, {"sets": 4, "values": 6 * 2 * 3}),
])
def test_set_sizes_match_the_definitions(method, groups, expected):
    assert statistics_set_sizes(method, (4, 6, 2, 3), groups) == expected


def test_each_panel_highlights_the_set_of_the_chosen_value(monkeypatch):
    drawn = []  # what each panel's cube of voxels was drawn with
    voxels = Axes3D.voxels

    def recording_voxels(ax, filled, **kwargs):
        drawn.append((np.asarray(filled), np.asarray(kwargs["facecolors"])))
        return voxels(ax, filled, **kwargs)

    monkeypatch.setattr(Axes3D, "voxels", recording_voxels)
    n, c, hw = 4, 6, 4
    fig = plt.figure()
    axes = plot_statistics_sets(fig, shape=(n, c, 2, 2), num_groups=3)
    assert [ax.get_title().splitlines()[0] for ax in axes] == [
        "batch norm", "layer norm", "instance norm", "group norm (G = 3)"]
    # the sets of value (N - 1, 0, 0, 0), written out by hand
    expected = {name: np.zeros((n, c, hw), dtype=bool) for name in ("bn", "ln", "in", "gn")}
    expected["bn"][:, 0, :] = True
    expected["ln"][n - 1, :, :] = True
    expected["in"][n - 1, 0, :] = True
    expected["gn"][n - 1, :c // 3, :] = True
    assert len(drawn) == len(axes)
    for ax, (filled, faces), mask in zip(axes, drawn, expected.values()):
        assert filled.shape == (n, c, hw) and filled.all()  # the whole input is drawn
        # one colour for the chosen value's set, another for every other value
        chosen_colour = faces[n - 1, 0, 0]
        assert np.array_equal((faces == chosen_colour).all(axis=-1), mask)
        assert len(np.unique(faces[~mask], axis=0)) == 1
        assert ax.get_title().endswith(f"sets of {int(mask.sum())} values")
    plt.close(fig)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError):
        statistics_set_sizes("weight", (2, 4, 3, 3))
