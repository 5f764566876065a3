# A ManiSkill2-Learn config (its own Python-dict format) for a deliberately tiny BC PointNet actor.
# Same structure as ManiSkill2-Learn's configs/brl/bc/pointnet.py, with small widths so that the
# checkpoint is a few KB; ms2flow test data (tests/test_ml2l_policy.py), written for ms2flow.
agent_cfg = dict(
    type="BC",
    batch_size=8,
    actor_cfg=dict(
        type="ContinuousActor",
        head_cfg=dict(type="TanhHead", noise_std=1e-5),
        nn_cfg=dict(
            type="Visuomotor",
            visual_nn_cfg=dict(type="PointNet", feat_dim="pcd_all_channel", mlp_spec=[16, 32], feature_transform=[]),
            mlp_cfg=dict(
                type="LinearMLP",
                norm_cfg=None,
                mlp_spec=["32 + agent_shape", 16, "action_shape"],
                inactivated_output=True,
                zero_init_output=True,
            ),
        ),
        optim_cfg=dict(type="Adam", lr=3e-3),
    ),
)

env_cfg = dict(
    type="gym",
    env_name="PickCube-v0",
    obs_mode="pointcloud",
    control_mode="pd_ee_delta_pose",
    obs_frame="ee",
    n_points=1200,
    n_goal_points=50,
)
