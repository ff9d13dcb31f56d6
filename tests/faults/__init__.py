"""Faults caused for real: killed processes, full disks, bad input, outages."""
