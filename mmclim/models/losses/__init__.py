# Copyright (c) mmclim contributors. All rights reserved.
from .baron_caption_loss import BaronCaptionLoss, soft_target_contrastive_loss
from .clim_caption_loss import CLIMCaptionLoss, caption_ids_from_texts, contrastive_caption_loss
from .concept_distill_loss import ConceptDistillLoss, concept_distillation_loss
from .detic_caption_loss import DeticCaptionLoss, detic_caption_loss, image_ids_to_tensor
from .detic_tag_loss import DeticTagLoss, detic_tag_loss, tags_to_multi_hot
from .region_concept_loss import RegionConceptLoss, region_concept_contrastive_loss
from .sigmoid_class_loss import (DeticSigmoidClassLoss, federated_class_mask,
                                 read_class_frequencies, sigmoid_class_loss)

__all__ = [
    'BaronCaptionLoss', 'soft_target_contrastive_loss', 'CLIMCaptionLoss', 'caption_ids_from_texts',
    'contrastive_caption_loss', 'DeticCaptionLoss', 'detic_caption_loss', 'image_ids_to_tensor',
    'DeticTagLoss', 'detic_tag_loss', 'tags_to_multi_hot', 'DeticSigmoidClassLoss',
    'federated_class_mask', 'read_class_frequencies', 'sigmoid_class_loss',
    'ConceptDistillLoss', 'concept_distillation_loss', 'RegionConceptLoss',
    'region_concept_contrastive_loss'
]
