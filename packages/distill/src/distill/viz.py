"""Pictures of a skill profile: an icicle chart of the tree (PNG) and a collapsible HTML view.

Both colour a node by its accuracy (red = low, green = high, grey = not judged). The HTML is one
self-contained file (no external scripts) listing counts for every node.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
from skillcore import SkillProfile

_CMAP = "RdYlGn"


def _leaf_counts(profile: SkillProfile) -> np.ndarray:
    """Leaves under each node (a node's icicle height)."""
    tree = profile.tree
    counts = np.zeros(len(tree.nodes), dtype=np.int64)
    counts[tree.leaf_indices] = 1
    for i in range(len(tree.nodes) - 1, 0, -1):  # preorder: children come after parents
        counts[tree.parent[i]] += counts[i]
    return counts


def plot_tree(profile: SkillProfile, *, title: str | None = None, max_label_depth: int | None = None) -> Any:
    """An icicle chart: depth left to right, each node as tall as its number of leaves."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    tree = profile.tree
    acc = profile.accuracy
    heights = _leaf_counts(profile)
    depth = int(tree.depth.max())
    n_leaves = int(heights[0])
    fig_h = min(max(4.0, 0.36 * n_leaves), 60.0)
    fig, ax = plt.subplots(figsize=(3.2 * depth + 1.5, fig_h))
    cmap = colormaps[_CMAP]
    norm = Normalize(0.0, 1.0)
    y0 = np.zeros(len(tree.nodes))
    for node in tree.nodes:  # preorder: a parent's position is known before its children
        cursor = y0[node.index]
        for child in node.children:
            y0[child.index] = cursor
            cursor += heights[child.index]
    label_min = n_leaves / 60.0  # no labels in slivers too thin to read
    for node in tree.nodes[1:]:
        i, d = node.index, node.depth
        a = acc[i]
        colour = (0.85, 0.85, 0.85, 1.0) if math.isnan(a) else cmap(norm(a))
        ax.add_patch(
            plt.Rectangle((d - 1, y0[i]), 1, heights[i], facecolor=colour, edgecolor="white", lw=0.8)
        )
        if heights[i] >= label_min and (max_label_depth is None or d <= max_label_depth):
            stat = "n/a" if math.isnan(a) else f"{a:.0%} ({profile.correct[i]}/{profile.attempts[i]})"
            ax.text(d - 0.96, y0[i] + heights[i] / 2, f"{node.name[:38]}\n{stat}", va="center", fontsize=7)
    ax.set_xlim(0, depth)
    ax.set_ylim(n_leaves, 0)
    ax.set_xticks([d + 0.5 for d in range(depth)], [f"depth {d + 1}" for d in range(depth)])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.025, pad=0.01, label="accuracy")
    ax.set_title(title or f"Skill accuracy ({int(profile.attempts[tree.leaf_indices].sum())} leaf attempts)")
    fig.tight_layout()
    return fig


def _hex(value: float) -> str:
    from matplotlib import colormaps

    if math.isnan(value):
        return "#d9d9d9"
    r, g, b, _ = colormaps[_CMAP](max(0.0, min(1.0, value)))
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
details {{ margin-left: 1.2em; }}
summary {{ cursor: pointer; padding: 2px 4px; }}
.leaf {{ margin-left: 2.4em; padding: 2px 4px; }}
.sw {{ display: inline-block; width: 2.6em; text-align: right; padding: 0 4px; margin-right: 6px;
       border-radius: 3px; font-variant-numeric: tabular-nums; }}
.n {{ color: #555; font-size: 90%; }}
.hidden {{ display: none; }}
</style></head><body>
<h2>{title}</h2>
<p>{overview}</p>
<p><button onclick="setAll(true)">expand all</button> <button onclick="setAll(false)">collapse all</button>
 <input id="q" placeholder="filter skills" oninput="filt(this.value)"></p>
<div id="tree">
{body}
</div>
<script>
function setAll(open) {{ document.querySelectorAll('#tree details').forEach(d => d.open = open); }}
function filt(q) {{
  q = q.toLowerCase();
  document.querySelectorAll('#tree [data-chain]').forEach(el => {{
    const hit = !q || el.dataset.chain.toLowerCase().includes(q);
    el.classList.toggle('hidden', !hit && !el.querySelector('[data-chain]:not(.hidden)'));
    if (q && hit && el.tagName === 'DETAILS') el.open = true;
  }});
}}
</script>
</body></html>
"""


def tree_html(profile: SkillProfile, *, title: str = "Skill profile", open_depth: int = 1) -> str:
    """A self-contained HTML page: the tree as nested collapsible lists with accuracy and counts."""
    tree = profile.tree
    acc = profile.accuracy
    low, high = profile.credible_interval()

    def line(i: int) -> str:
        a = acc[i]
        shown = "n/a" if math.isnan(a) else f"{a:.0%}"
        counts = (
            f"{profile.correct[i]}/{profile.attempts[i]} correct, {profile.problems[i]} problems, "
            f"90% CI {low[i]:.2f}-{high[i]:.2f}"
        )
        return (
            f'<span class="sw" style="background:{_hex(a)}">{shown}</span>'
            f'{html.escape(tree.nodes[i].name)} <span class="n">({counts})</span>'
        )

    def render(i: int) -> str:
        node = tree.nodes[i]
        chain = html.escape(node.chain_text, quote=True)
        if node.is_leaf:
            return f'<div class="leaf" data-chain="{chain}" data-acc="{acc[i]:.4f}">{line(i)}</div>'
        inner = "\n".join(render(c.index) for c in node.children)
        is_open = " open" if node.depth < open_depth else ""
        return f'<details{is_open} data-chain="{chain}"><summary>{line(i)}</summary>\n{inner}\n</details>'

    body = "\n".join(render(c.index) for c in tree.root.children)
    leaves = tree.leaf_indices
    attempts = int(profile.attempts[leaves].sum())
    correct = int(profile.correct[leaves].sum())
    overview = (
        f"{tree.n_leaves} leaf skills, {int((profile.attempts[leaves] > 0).sum())} judged; "
        f"{correct}/{attempts} correct leaf attempts (a problem counts at every leaf it is tagged with)."
    )
    return _PAGE.format(title=html.escape(title), overview=html.escape(overview), body=body)
