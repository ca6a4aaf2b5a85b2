"""The execution engine: framework and user code run in worker processes, never in the caller.

The parent (the CLI or the Python API) plans, judges and writes reports; a worker imports the
frameworks and the user's code and runs cases. The parent owns the clock: a worker that overruns
its case is killed, one that dies (a signal, ``os._exit``, a hard crash) is reported and replaced,
and the run goes on. Nothing a worker prints reaches the report stream.

    process.py   one worker process seen from the parent: start, send, receive with a deadline, stop
    worker.py    the worker's side: its main loop and the task handlers
    deaths.py    how a worker ended, in words
    pool.py      verify's scheduler: cases grouped per framework configuration, spread over workers
    stream.py    bench's driver: one worker at a time, resumed after the case that killed one
"""
