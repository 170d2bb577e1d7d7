"""Typed run configuration and the rules it must satisfy, checked before anything is written."""
