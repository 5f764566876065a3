# A ManiSkill2-Learn config (its own Python-dict format) for a deliberately tiny PPO PointNet agent.
# Same structure as ManiSkill2-Learn's configs/mfrl/ppo/maniskill2_pn.py (GaussianHead actor, shared
# visual backbone, value critic), with small widths; ms2flow test data (tests/test_ml2l_policy.py).
agent_cfg = dict(
    type="PPO",
    gamma=0.95,
    lmbda=0.95,
    critic_coeff=0.5,
    entropy_coeff=0,
    critic_clip=False,
    obs_norm=False,
    rew_norm=True,
    adv_norm=True,
    recompute_value=True,
    num_epoch=2,
    critic_warmup_epoch=4,
    batch_size=8,
    detach_actor_feature=False,
    max_grad_norm=0.5,
    eps_clip=0.2,
    max_kl=0.2,
    dual_clip=None,
    shared_backbone=True,
    ignore_dones=True,
    actor_cfg=dict(
        type="ContinuousActor",
        head_cfg=dict(type="GaussianHead", init_log_std=-1, clip_return=True, predict_std=False),
        nn_cfg=dict(
            type="Visuomotor",
            visual_nn_cfg=dict(type="PointNet", feat_dim="pcd_all_channel", mlp_spec=[16, 32], feature_transform=[]),
            mlp_cfg=dict(
                type="LinearMLP",
                norm_cfg=None,
                mlp_spec=["32 + agent_shape", 16, 16, "action_shape"],
                inactivated_output=True,
                zero_init_output=True,
            ),
        ),
        optim_cfg=dict(type="Adam", lr=3e-3, param_cfg={"(.*?)visual_nn(.*?)": None}),
    ),
    critic_cfg=dict(
        type="ContinuousCritic",
        nn_cfg=dict(
            type="Visuomotor",
            visual_nn_cfg=None,
            mlp_cfg=dict(
                type="LinearMLP", norm_cfg=None, mlp_spec=["32 + agent_shape", 16, 1], inactivated_output=True,
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
    ignore_dones=True,
)
