"""Voice conversion on the board: CREPE pitch (``crepe``), WORLD analysis/conversion/synthesis
(``world``), target speaker profiles (``profile``) and pitch metrics (``metrics``). numpy and
pyworld only: never torch, librosa or fleet."""
