"""Parallel generation under a budget of network calls (ARDM paper, section 3 of ARDM.md).

A policy splits the D generation steps into k chunks, one network call each; its expected cost
under a per-step table l is sum_j (s_{j+1} - s_j) * l[s_j]. optimal_policies finds the exact
optimum for each budget by a fast layered DP; reference_policies is the direct O(K D^2) DP;
stage_policies / joint_allocation handle the S stages of an upscale ARDM.
"""

from ardm.parallel.allocation import joint_allocation, stage_policies
from ardm.parallel.dp import optimal_policies, reference_policies
from ardm.parallel.policy import Policy, naive_policy, policy_cost

__all__ = [
    "Policy",
    "joint_allocation",
    "naive_policy",
    "optimal_policies",
    "policy_cost",
    "reference_policies",
    "stage_policies",
]
