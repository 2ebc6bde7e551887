"""Runtimes and tensor plumbing shared by the families: devices, CPU lanes, OpenVINO."""
