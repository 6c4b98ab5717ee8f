# Copyright (c) mmclim contributors. All rights reserved.
from .vocabulary import embed_vocabulary, resolve_text_tower, set_vocabulary, text_tower

__all__ = ['embed_vocabulary', 'resolve_text_tower', 'set_vocabulary', 'text_tower']
