"""The control step, written once: what a policy reads and commands (spec), the action -> joint-target conversion
(actions), the robot observation keys (observation), the observation history and chunk queue (history), the policy
runner (runner), the stored row (rows) and the episode loop (loop) that evaluation, finetuning, chunk analysis and
the scripted demos plug an actor into. The twin, the robot backends and the ROS nodes use these; nothing here imports
sim/, rl/ or ROS."""
