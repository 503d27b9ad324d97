"""The control step, written once: what a policy reads and commands (spec), the observation history and chunk queue
(history), the policy runner and its episode-loop actor (runner), the stored row (rows) and the episode loop (loop)
that evaluation, finetuning, chunk analysis, replay and the scripted demos plug an actor into. Below this package, in
robots/, are the two pieces every robot backend needs as well: the one action -> joint-target conversion
(robots/actions.py, which the backends' safety layer uses) and the one assembly of the robot's observation keys
(robots/observation.py, which the twin, the Interbotix backend and the ROS nodes use).
Nothing here imports sim/, rl/ or ROS."""
