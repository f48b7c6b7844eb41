"""`needletrack view`: the clinician's live viewer (Qt).

The model runs apart from the GUI, and the GUI only reads it:

- ``engine``: :class:`LiveEngine`, the link, the stream, the frames fused live and the recording, on an asyncio
  loop in its own thread; the GUI takes a :class:`snapshot.Snapshot` at its own pace and never waits on it.
- pure parts, tested without Qt: ``alerts`` (what must be shown), ``cues`` (when to sound, and the tones),
  ``signal_watch`` (signal lost and back), ``chart_buffer`` (the strip charts' data), ``snapshot``.
- link and files: ``commands`` (control commands answered by token), ``recorder``, ``frame_feed``.
- widgets, one per file: ``image_view``, ``readouts``, ``charts``, ``connection_panel``, ``record_panel``,
  ``alert_banner``; ``actions`` (menus, shortcuts, the help dialog), ``sound``, ``theme``; ``main_window``
  puts them together; ``app`` and ``cli`` start it; ``refcount_guard`` keeps PySide6 6.12 from aborting Python 3.11.
"""
