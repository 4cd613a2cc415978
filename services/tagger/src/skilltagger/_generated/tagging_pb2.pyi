from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Problem(_message.Message):
    __slots__ = ("id", "question", "solution")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    SOLUTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    question: str
    solution: str
    def __init__(self, id: _Optional[str] = ..., question: _Optional[str] = ..., solution: _Optional[str] = ...) -> None: ...

class TagProblemsRequest(_message.Message):
    __slots__ = ("problems", "tree_hash", "skip_cache")
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    TREE_HASH_FIELD_NUMBER: _ClassVar[int]
    SKIP_CACHE_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    tree_hash: str
    skip_cache: bool
    def __init__(self, problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., tree_hash: _Optional[str] = ..., skip_cache: _Optional[bool] = ...) -> None: ...

class Chain(_message.Message):
    __slots__ = ("names", "scores")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, names: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class ProblemResult(_message.Message):
    __slots__ = ("id", "chains", "backend", "backend_config_hash", "tree_hash", "from_cache")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    TREE_HASH_FIELD_NUMBER: _ClassVar[int]
    FROM_CACHE_FIELD_NUMBER: _ClassVar[int]
    id: str
    chains: _containers.RepeatedCompositeFieldContainer[Chain]
    backend: str
    backend_config_hash: str
    tree_hash: str
    from_cache: bool
    def __init__(self, id: _Optional[str] = ..., chains: _Optional[_Iterable[_Union[Chain, _Mapping]]] = ..., backend: _Optional[str] = ..., backend_config_hash: _Optional[str] = ..., tree_hash: _Optional[str] = ..., from_cache: _Optional[bool] = ...) -> None: ...

class TagProblemsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ProblemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ProblemResult, _Mapping]]] = ...) -> None: ...

class GetSkillTreeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSkillTreeResponse(_message.Message):
    __slots__ = ("tree_json", "tree_hash", "n_nodes", "n_leaves", "backend", "backend_config_hash")
    TREE_JSON_FIELD_NUMBER: _ClassVar[int]
    TREE_HASH_FIELD_NUMBER: _ClassVar[int]
    N_NODES_FIELD_NUMBER: _ClassVar[int]
    N_LEAVES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_CONFIG_HASH_FIELD_NUMBER: _ClassVar[int]
    tree_json: str
    tree_hash: str
    n_nodes: int
    n_leaves: int
    backend: str
    backend_config_hash: str
    def __init__(self, tree_json: _Optional[str] = ..., tree_hash: _Optional[str] = ..., n_nodes: _Optional[int] = ..., n_leaves: _Optional[int] = ..., backend: _Optional[str] = ..., backend_config_hash: _Optional[str] = ...) -> None: ...
