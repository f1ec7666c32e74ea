"""The agent runtime: registration, heartbeat, supervision, sampler, health probes, config."""
