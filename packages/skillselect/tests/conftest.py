import matplotlib
import pytest
from skillcore.tree import SkillTree
from skillselect.testing import small_tree

matplotlib.use("Agg")


@pytest.fixture
def tree() -> SkillTree:
    return small_tree()
