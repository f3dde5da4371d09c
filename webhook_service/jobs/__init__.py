"""Job lifecycle: submit, streaming orchestration, session-slot leases, the sweeper, shared queries.

Everything here works on the job rows (the source of truth); work reaches the
workers through a :class:`~webhook_service.jobs.dispatch.Dispatcher`, never
through a direct import of Celery.
"""
