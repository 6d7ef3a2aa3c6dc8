"""Composition only: the Azure Functions app registers the HTTP API and the blueprints; no I/O at import."""

import azure.functions as func

from functions import ingest, sweeper, worker
from functions.http_api import asgi_app

app = func.AsgiFunctionApp(app=asgi_app, http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(ingest.bp)
app.register_functions(worker.bp)
app.register_functions(sweeper.bp)
