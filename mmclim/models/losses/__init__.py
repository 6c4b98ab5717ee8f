# Copyright (c) mmclim contributors. All rights reserved.
from .clim_caption_loss import CLIMCaptionLoss, caption_ids_from_texts, contrastive_caption_loss

__all__ = ['CLIMCaptionLoss', 'caption_ids_from_texts', 'contrastive_caption_loss']
