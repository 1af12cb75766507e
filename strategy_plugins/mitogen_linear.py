"""Ansible's linear strategy, with each task's module run through Mitogen.

ansible.cfg makes it the default strategy of every playbook here. Playbooks behave as under
``linear`` (the same order of tasks and hosts, the same results); what changes is how a module
runs. Under ``linear`` every task that runs a module starts a new Python process, which imports
the module's libraries again (for the kubernetes client, about half a second of CPU per task).
Mitogen keeps one Python process per host for the whole run, its imports made once, and runs
each module in it. A release, a switchover or a failover spends its time on the cluster's waits,
not on starting Python. Mitogen is pinned in requirements.txt and installed by scripts/bootstrap.

Where Mitogen cannot be imported (an Ansible installed without this repository's requirements),
the plain ``linear`` strategy runs, with a warning. ``ANSIBLE_STRATEGY=linear`` chooses the plain
strategy on purpose. ansible-core 2.19 warns that strategy plugins from outside ansible.builtin
are deprecated; the warning is printed once per run.
"""

from ansible.utils.display import Display

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError:
    ansible_mitogen = None

if ansible_mitogen is not None:
    _Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)

    class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
        """The linear strategy, through Mitogen's connection to each host."""

else:
    from ansible.plugins.strategy.linear import StrategyModule as _Linear

    class StrategyModule(_Linear):
        """The plain linear strategy: Mitogen is not installed."""

        def __init__(self, *args, **kwargs):
            Display().warning(
                "Mitogen is not installed, so the plain linear strategy runs (every task a new "
                "Python process): install this repository's requirements (scripts/bootstrap)."
            )
            super().__init__(*args, **kwargs)
