"""skilltagger: the gRPC skill-tagging service (server, client, CLI) over the ``skilltag`` library.

Serve an engine (``skilltag.factory.build_engine``) with ``skilltagger.server.TaggerServer`` or
``skilltagger serve``; call it with ``skilltagger.client.TaggerClient``::

    with TaggerClient.from_address("grpc://127.0.0.1:50051") as client:
        results = client.tag(problems)

``skilltag.tag_records(records, client)`` gives skillcore TaggedProblems through the service.
"""
