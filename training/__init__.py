"""Training for monoocc_ros: privileged teacher, distilled student, DDP, exact resume.

Entry points are the ``monoocc train teacher|student|dump-teacher`` subcommands
(parsed in :mod:`monoocc_ros.cli.train`, run by :mod:`training.commands`); :func:`training.train.run_training` is the library entry (its parts:
:mod:`training.trainer`, :mod:`training.teacher_source`, :mod:`training.data`, :mod:`training.dump`).
"""
