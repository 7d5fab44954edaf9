"""The trusted trainer: a long-lived process that runs project code only.

It deserializes candidate artifacts, verifies every module itself (`verify`), plugs them into our own
PPO (`lanes`), trains whole batches of candidates × learning rates × seeds in one compiled program
(`server`) and returns raw arrays. `client` starts it inside the sandbox's containment and keeps it
warm; the worker (`workers.evaluate`) turns its raw arrays into returns, curves and scores.
"""
