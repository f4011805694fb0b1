"""The collector's own retention enforcement (where the cluster has no ISM plugin).

`policy`: a class's phases (warm, delete) read from its ISM policy file; `records`:
signed, hash-linked retention records (the evidence written before every deletion);
`evidence`: what an index holds, gathered before it is deleted; `job`: the job itself
(one collector at a time, under a lease); `runner`: the job in the collector and the
job a config describes; `ism`: evidence for deletions ISM made.
"""
