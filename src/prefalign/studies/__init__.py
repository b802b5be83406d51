"""Studies built on the trainers: the synthetic study of Xu et al. section 4 (:mod:`.synthetic`) and
the whole PPO-versus-DPO comparison on the tiny world (:mod:`.comparison`). The top layer, beside
the CLI: nothing below imports from here."""
