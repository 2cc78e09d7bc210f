"""The main job (``hedgenet-pipeline``): label → train → phonons → EPI → v_F(T) → report as cached stages.

- :mod:`~hedgenet.pipeline.stages`: the plan, each stage's composed config and hash, running one stage;
- :mod:`~hedgenet.pipeline.checks`: everything checked before the first stage runs;
- :mod:`~hedgenet.pipeline.run`: the run itself (plan, check, run, collect);
- :mod:`~hedgenet.pipeline.report`: report.md, report.html and headline.json from the stages' outputs.
"""
