"A SignalSet wrapper that records which of its members the analysis and explorer modules use (the stored-SignalSet contract)."
import sys
from convsvd.signals import SignalSet

CONTRACT = {'__len__', 'layers', 'labels', 'classes', '__getitem__', 'class_rows', 'iter_rows', 'subset'}
WATCHED = ('convsvd.analysis', 'convsvd.explorers')

class Recording(SignalSet):
    "Delegates everything to a real SignalSet; `used` holds the members read from convsvd.analysis/explorers code."
    def __init__(self, inner):
        object.__setattr__(self, '_inner', inner); object.__setattr__(self, 'used', set())
    def _note(self, name, depth=2):
        if sys._getframe(depth).f_globals.get('__name__', '') in WATCHED: object.__getattribute__(self, 'used').add(name)
    def __getattribute__(self, name):
        if name in ('_inner', 'used', '_note') or name.startswith('__'): return object.__getattribute__(self, name)
        object.__getattribute__(self, '_note')(name)
        return getattr(object.__getattribute__(self, '_inner'), name)
    def __len__(self): self._note('__len__'); return len(self._inner)
    def __getitem__(self, layer): self._note('__getitem__'); return self._inner[layer]
    def __contains__(self, layer): self._note('__contains__'); return layer in self._inner
    def __iter__(self): self._note('__iter__'); return iter(self._inner)
    def __repr__(self): return 'Recording(' + repr(self._inner) + ')'
