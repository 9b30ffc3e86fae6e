"""Bridges to other codes. ``jaxatom.interop.schnetpack`` imports SchNetPack 2.x models (needs torch only there)."""
