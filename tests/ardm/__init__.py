"""Tests of the ardm library, one file per module (or subpackage) under test."""
