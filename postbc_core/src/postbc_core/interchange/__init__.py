"""Episode stores in the formats and viewers other tools use: MCAP with ROS 2 messages (Foxglove, Lichtblick),
Rerun recordings (`postbc data view`) and LeRobot v3 datasets (export, and import back).

Each format lives in its own module and needs an optional extra (`pip install 'postbc_core[mcap]'`, `[rerun]`,
`[lerobot]`); a missing one is a PostBCError naming the extra. Episodes are read only through EpisodeStore's
public reader (`episode`, `episode_meta`, `schema`), so a store's on-disk codecs never matter here.
"""
