# Copyright (c) mmclim contributors. All rights reserved.
from typing import Optional

from mmdet.registry import MODELS
from torch import Tensor

from .detic_bbox_head import DeticBBoxHead
from .pseudo_word_classifier import DEFAULT_NUM_WORDS, DEFAULT_WORD_DROP_RATIO, PseudoWordClassifier


@MODELS.register_module()
class BaronBBoxHead(DeticBBoxHead):
    """BARON's box head (Wu et al., CVPR 2023): :class:`~.DeticBBoxHead` whose classifier reads
    each region as a sentence of pseudo words through the frozen CLIP text tower
    (:class:`~.PseudoWordClassifier`, the official ``BaronBBoxHead``).

    Everything else is ``DeticBBoxHead``'s: the layers before the classifier, the
    class-agnostic regression, the sigmoid loss with the base/novel class weights of the split
    file. :meth:`vision_to_language` returns the pseudo words (N, num_words, W) that BARON's
    caption branch gathers into bags (:class:`mmclim.models.detectors.BaronDetector`).

    Args:
        word_dim (int, optional): The text tower's word size W, filled in by the detector.
            Defaults to None.
        num_words (int): Pseudo words per region. Defaults to 4 (official).
        word_drop_ratio (float): Probability of dropping a word in training. Defaults to 0.5
            (official ``words_drop_ratio``).
        text_output (str): The tower's output compared with the class embeddings:
            ``'projection'`` or ``'last_block'`` (official on OV-COCO, ``use_attn12_output``).
            Defaults to ``'projection'``.
        **kwargs: ``DeticBBoxHead`` arguments.
    """

    def __init__(self,
                 word_dim: Optional[int] = None,
                 num_words: int = DEFAULT_NUM_WORDS,
                 word_drop_ratio: float = DEFAULT_WORD_DROP_RATIO,
                 text_output: str = 'projection',
                 **kwargs) -> None:
        self._classifier_args = dict(word_dim=word_dim, num_words=num_words,
                                     word_drop_ratio=word_drop_ratio, text_output=text_output)
        super().__init__(**kwargs)

    def _build_classifier(self, class_embeddings: str, split_file: str,
                          **kwargs) -> PseudoWordClassifier:
        """The pseudo-word classifier on the ``cls_last_dim`` features."""
        return PseudoWordClassifier(self.cls_last_dim, class_embeddings, split_file,
                                    **self._classifier_args, **kwargs)

    @property
    def num_words(self) -> int:
        """Pseudo words per region."""
        return self.classifier.num_words

    def vision_to_language(self, x: Tensor) -> Tensor:
        """Pseudo words of the regions (official ``vision_to_language``).

        Args:
            x (Tensor): RoI features of shape (N, C_in, h, w).

        Returns:
            Tensor: Shape (N, num_words, W).
        """
        return self.classifier.embed(self._cls_features(x))
