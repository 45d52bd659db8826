"""LMM describers: backends behind one interface (`base`), the answer parser (`parse`), the resumable
store (`store`), the work loop (`runner`) and the setting hash (`setting`). Import from the submodules,
so that a stage depends only on what it uses.
"""
