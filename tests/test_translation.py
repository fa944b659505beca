

def test_the_public_tasks_are_the_controlnets_tasks():
    """One task list for users (geot2e.sampling, read by the CLI without xarray) and the
    ControlNet's one-hot order: the same set."""
    from geot2e.models.control import TASKS as CONTROL_TASKS
    from geot2e.sampling import TRANSLATION_TASKS
    from geot2e.translation import TASKS

    assert TASKS == TRANSLATION_TASKS and set(CONTROL_TASKS) == set(TRANSLATION_TASKS)
