# Copyright (c) mmclim contributors. All rights reserved.
__version__ = '0.1.0'


def parse_version_info(version_str: str) -> tuple:
    """Parse a version string into a tuple, e.g. ``'0.1.0rc1'`` -> ``(0, 1, 0, 'rc1')``.

    Args:
        version_str (str): The version string.

    Returns:
        tuple: Integer parts followed by any pre-release tag.
    """
    parts = []
    for part in version_str.split('.'):
        if part.isdigit():
            parts.append(int(part))
        elif 'rc' in part:
            number, tag = part.split('rc')
            parts.extend([int(number), f'rc{tag}'])
    return tuple(parts)


version_info = parse_version_info(__version__)
