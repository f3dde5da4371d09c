"""Celery: the app bound to Flask, thin tasks, and the dispatcher the domain sends work through.

The only package that imports Celery; nothing outside ``cli`` imports it.
"""
