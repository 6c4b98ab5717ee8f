# Copyright (c) mmclim contributors. All rights reserved.
"""Image-caption datasets: the shared validation and reporting of bad entries."""
import os.path as osp
from typing import List, Optional, Tuple

from mmengine.dataset import BaseDataset
from mmengine.fileio import exists, get_local_path, load
from mmengine.logging import print_log

# How many offending image ids the start-up report names.
NUM_REPORTED_IDS = 5
BAD_ENTRY_POLICIES = ('skip', 'raise')


class CaptionDataset(BaseDataset):
    """Base class of image-caption datasets.

    Subclasses parse their annotation file in :meth:`parse_entries` into dicts with ``img_id``,
    ``file_name`` and ``captions`` (list of str). This class joins the image paths, checks every
    entry and reports the bad ones at start-up: an entry whose image file is missing (when
    ``check_images``) or that has no non-empty caption is counted, logged with the first few ids,
    and then skipped or fatal as ``on_bad_entry`` says. Nothing is dropped silently; the counts
    stay in ``self.bad_entries``.

    Each data info has ``img_path``, ``img_id``, ``captions`` (the stripped non-empty captions)
    and, when the annotation has them, ``height`` and ``width``.

    Args:
        ann_file (str): Annotation file, relative to ``data_root``.
        data_root (str): Root of ``ann_file`` and ``data_prefix``. Defaults to ``''``.
        data_prefix (dict): ``dict(img='folder/')``, the image folder. Defaults to
            ``dict(img='')``.
        on_bad_entry (str): ``'skip'`` (log and skip bad entries) or ``'raise'`` (fail naming
            them). Defaults to ``'skip'``.
        check_images (bool): Check at start-up that every image file exists. Defaults to True.
        backend_args (dict, optional): mmengine file backend arguments. Defaults to None.
        **kwargs: Other arguments of ``mmengine.dataset.BaseDataset`` (``pipeline``,
            ``test_mode``, ``indices``, ``serialize_data``, ``lazy_init``, ...).
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Optional[dict] = None,
                 on_bad_entry: str = 'skip',
                 check_images: bool = True,
                 backend_args: Optional[dict] = None,
                 **kwargs) -> None:
        if on_bad_entry not in BAD_ENTRY_POLICIES:
            raise ValueError(f'{type(self).__name__}: on_bad_entry must be one of '
                             f'{BAD_ENTRY_POLICIES}, got {on_bad_entry!r}')
        self.on_bad_entry = on_bad_entry
        self.check_images = check_images
        self.backend_args = backend_args
        self.bad_entries: dict = {}
        super().__init__(ann_file=ann_file, data_root=data_root,
                         data_prefix=data_prefix or dict(img=''), **kwargs)

    def parse_entries(self, annotation: dict) -> List[dict]:
        """Turn the loaded annotation file into entries.

        Args:
            annotation (dict): The loaded json.

        Returns:
            list[dict]: Entries with ``img_id``, ``file_name``, ``captions`` and optionally
            ``height`` and ``width``.
        """
        raise NotImplementedError

    def _load_annotation(self) -> dict:
        if not exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(f'{type(self).__name__}: annotation file {self.ann_file} '
                                    f'does not exist')
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            annotation = load(local_path)
        if not isinstance(annotation, dict):
            raise ValueError(f'{type(self).__name__}: {self.ann_file} must hold a json object, '
                             f'got {type(annotation).__name__}')
        return annotation

    def _report(self, problems: List[Tuple[str, object]]) -> None:
        """Count, log and skip or raise for ``(reason, img_id)`` pairs."""
        by_reason: dict = {}
        for reason, img_id in problems:
            by_reason.setdefault(reason, []).append(img_id)
        self.bad_entries = {reason: len(ids) for reason, ids in by_reason.items()}
        if not problems:
            return
        summary = '; '.join(f'{len(ids)} {reason} (first ids: {ids[:NUM_REPORTED_IDS]})'
                            for reason, ids in by_reason.items())
        message = f'{type(self).__name__} {self.ann_file}: {summary}'
        if self.on_bad_entry == 'raise':
            raise ValueError(f"{message}; set on_bad_entry='skip' to train without them")
        print_log(f'{message}; skipped (on_bad_entry=skip)', logger='current', level=30)

    def load_data_list(self) -> List[dict]:
        """Parse, check and report the entries.

        Returns:
            list[dict]: The good entries as data infos.
        """
        entries = self.parse_entries(self._load_annotation())
        img_root = self.data_prefix.get('img', '')
        data_list, problems = [], []
        for entry in entries:
            captions = [c.strip() for c in entry['captions'] if isinstance(c, str) and c.strip()]
            img_path = osp.join(img_root, entry['file_name'])
            if not captions:
                problems.append(('entries without a caption', entry['img_id']))
            elif self.check_images and not exists(img_path, backend_args=self.backend_args):
                problems.append(('missing image files', entry['img_id']))
            else:
                info = dict(img_path=img_path, img_id=entry['img_id'], captions=captions)
                info.update({k: entry[k] for k in ('height', 'width') if k in entry})
                data_list.append(info)
        self._report(problems)
        if not data_list:
            raise ValueError(f'{type(self).__name__}: no usable entry in {self.ann_file}')
        return data_list
