"""The strategy every playbook runs with (ansible.cfg: strategy_plugins/mitogen_linear.py).

Under Mitogen, one Python process per host runs every module of a run, so two tasks' commands
share a parent; under the plain linear strategy each task's module is a new process. Where
Mitogen cannot be imported, the plain strategy runs, says so, and the playbook still works.
"""

import sys

PLAYBOOK = """\
- name: Two tasks, each reporting the process that ran its module
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: First
      ansible.builtin.command: sh -c 'echo $PPID'
      register: first
      changed_when: false
    - name: Second
      ansible.builtin.command: sh -c 'echo $PPID'
      register: second
      changed_when: false
    - name: Report
      ansible.builtin.debug:
        msg: "parents={{ first.stdout }},{{ second.stdout }}"
"""


def _parents(ansible, tmp_path, env=None):
    playbook = tmp_path / "parents.yml"
    playbook.write_text(PLAYBOOK)
    result = ansible(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        playbook,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "parents=" in line)
    first, second = line.split("parents=")[1].strip().strip("\"'").split(",")
    return first, second, result


def test_the_configured_strategy_runs_every_module_in_one_process(ansible, tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    first, second, result = _parents(ansible, tmp_path)
    assert first == second, f"each task's module ran in a new process ({first}, {second}): is Mitogen on?"
    assert "plain linear strategy runs" not in result.stdout + result.stderr


def test_without_mitogen_the_plain_linear_strategy_runs_and_says_so(ansible, tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    # A package of the same name first on the path, which refuses to import.
    shadow = tmp_path / "shadow" / "ansible_mitogen"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('Mitogen is absent in this test')\n")
    first, second, result = _parents(ansible, tmp_path, env={"PYTHONPATH": str(shadow.parent)})
    assert first != second, "the fallback still ran the modules in one process"
    assert "Mitogen is not installed, so the plain linear strategy runs" in result.stdout + result.stderr
