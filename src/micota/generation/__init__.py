"""Generation: prompt rendering (:mod:`.prompts`), backends behind one interface (:mod:`.backends`),
and the resumable sample writer shared by ``micota eval`` and ``micota generate`` (:mod:`.runner`)."""
